# ruff: noqa: RUF001  (Japanese text uses full-width punctuation)
"""Every label of the settings page, in one dictionary: English and Japanese, chosen by
``?lang=`` or else ``Accept-Language``."""

from __future__ import annotations

DEFAULT_LANGUAGE = "en"

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Browser Sessions",
        "intro": "Sites your scheduled tasks can browse as you. Sessions are encrypted "
        "with a key that belongs to you.",
        "add_site_session": "Add site session",
        "label": "Label",
        "start_url": "Start URL",
        "logged_in_selector": "Logged-in selector",
        "login_url_pattern": "Login URL pattern",
        "label_hint": "A name you will recognise, e.g. My Twitter.",
        "start_url_hint": "A page that proves you are logged in.",
        "selector_hint": "CSS that exists only when logged in, e.g. #avatar.",
        "pattern_hint": "A glob matching the site's login page, e.g. https://example.com/login**",
        "open_login_window": "Open login window",
        "save": "Save",
        "cancel": "Cancel",
        "close": "Close",
        "relogin": "Re-login",
        "revoke": "Revoke",
        "delete": "Delete",
        "site": "Site",
        "status": "Status",
        "last_used": "Last used",
        "actions": "Actions",
        "never": "Never",
        "no_sessions": "No sessions yet. Add one to let your tasks browse a site as you.",
        "status_pending": "Pending",
        "status_active": "Active",
        "status_expired": "Expired",
        "status_revoked": "Revoked",
        "status_expiring_soon": "Expiring soon",
        "login_dialog_title": "Log in to {label}",
        "login_dialog_help": "Log in inside the browser below (solve any CAPTCHA or 2FA), "
        "then press Save.",
        "live_view_title": "Remote browser for logging in",
        "capture_queued": "Starting a browser…",
        "capture_open": "Open",
        "capture_saving": "Checking that you're logged in…",
        "capture_saved": "Saved",
        "capture_not_logged_in": "Not logged in — keep going and press Save again",
        "capture_timed_out": "Timed out",
        "capture_cancelled": "Cancelled",
        "capture_failed": "Something went wrong: {reason}",
        "confirm_delete_title": "Delete this session?",
        "confirm_delete_text": "“{label}” and its saved login are deleted for good. "
        "Tasks that use it will fail until you add it again.",
        "confirm_revoke_title": "Revoke this session?",
        "confirm_revoke_text": "Tasks can no longer use “{label}”. Add a new session to "
        "use the site again.",
        "error_required": "This field is required.",
        "error_url": "Enter a full http:// or https:// address, e.g. https://example.com/home.",
        "error_pattern": "Enter a full http(s) address pattern; use ** for anything, "
        "* for anything but /.",
        "error_pattern_or_selector": "Give a logged-in selector or a login URL pattern so an "
        "expired login can be noticed.",
        "error_selector": "This is not a valid CSS selector.",
        "error_too_long": "This is too long.",
        "error_generic": "That did not work: {message}",
        "session_added": "Session added. Log in in the window to finish.",
        "loading": "Loading…",
        "link_refused": "This link is not valid for you or has expired. Open Browser "
        "Sessions again from your settings.",
    },
    "ja": {
        "title": "ブラウザセッション",
        "intro": "スケジュールされたタスクがあなたとして閲覧できるサイトです。"
        "セッションはあなた専用の鍵で暗号化されます。",
        "add_site_session": "サイトのセッションを追加",
        "label": "ラベル",
        "start_url": "開始 URL",
        "logged_in_selector": "ログイン確認セレクター",
        "login_url_pattern": "ログイン URL パターン",
        "label_hint": "分かりやすい名前（例: 私の Twitter）。",
        "start_url_hint": "ログインしていることが分かるページ。",
        "selector_hint": "ログイン中だけ存在する CSS（例: #avatar）。",
        "pattern_hint": "サイトのログインページに一致するグロブ（例: "
        "https://example.com/login**）。",
        "open_login_window": "ログインウィンドウを開く",
        "save": "保存",
        "cancel": "キャンセル",
        "close": "閉じる",
        "relogin": "再ログイン",
        "revoke": "無効化",
        "delete": "削除",
        "site": "サイト",
        "status": "状態",
        "last_used": "最終使用",
        "actions": "操作",
        "never": "未使用",
        "no_sessions": "セッションはまだありません。追加するとタスクがあなたとして"
        "サイトを閲覧できます。",
        "status_pending": "保留中",
        "status_active": "有効",
        "status_expired": "期限切れ",
        "status_revoked": "無効化済み",
        "status_expiring_soon": "まもなく期限切れ",
        "login_dialog_title": "{label} にログイン",
        "login_dialog_help": "下のブラウザでログインし（CAPTCHA や二段階認証も）、"
        "保存を押してください。",
        "live_view_title": "ログイン用のリモートブラウザ",
        "capture_queued": "ブラウザを起動しています…",
        "capture_open": "ログイン待ち",
        "capture_saving": "ログインしているか確認しています…",
        "capture_saved": "保存しました",
        "capture_not_logged_in": "ログインしていません — 続けてから、もう一度保存を押してください",
        "capture_timed_out": "時間切れ",
        "capture_cancelled": "キャンセルしました",
        "capture_failed": "問題が発生しました: {reason}",
        "confirm_delete_title": "このセッションを削除しますか？",
        "confirm_delete_text": "「{label}」と保存済みのログインは完全に削除されます。"
        "再度追加するまで、これを使うタスクは失敗します。",
        "confirm_revoke_title": "このセッションを無効化しますか？",
        "confirm_revoke_text": "タスクは「{label}」を使えなくなります。"
        "再び使うには新しいセッションを追加してください。",
        "error_required": "必須項目です。",
        "error_url": "http:// または https:// から始まる完全なアドレスを入力してください"
        "（例: https://example.com/home）。",
        "error_pattern": "http(s) の完全なアドレスのパターンを入力してください。"
        "** は任意の文字列、* は / 以外に一致します。",
        "error_pattern_or_selector": "期限切れを検出できるよう、ログイン確認セレクターか"
        "ログイン URL パターンを指定してください。",
        "error_selector": "有効な CSS セレクターではありません。",
        "error_too_long": "長すぎます。",
        "error_generic": "失敗しました: {message}",
        "session_added": "セッションを追加しました。ウィンドウでログインして完了してください。",
        "loading": "読み込み中…",
        "link_refused": "このリンクは無効か期限切れです。ツール設定からもう一度"
        "ブラウザセッションを開いてください。",
    },
}

LANGUAGES = tuple(LABELS)


def choose_language(query_lang: str | None, accept_language: str | None) -> str:
    """``?lang=`` when it names a known language, else the best ``Accept-Language`` match."""
    if query_lang and query_lang.lower()[:2] in LABELS:
        return query_lang.lower()[:2]
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LABELS and quality > 0:
            ranked.append((-quality, index, primary))
    return sorted(ranked)[0][2] if ranked else DEFAULT_LANGUAGE


def labels(language: str) -> dict[str, str]:
    return LABELS.get(language, LABELS[DEFAULT_LANGUAGE])
