// The settings page: the user's sessions, Add site session, the login dialog with the live
// view, Re-login, Revoke and Delete. Talks to /v1 with the page's cookie and CSRF token.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("bs-config").textContent);
  const L = config.labels;
  const t = (key, values) => (L[key] || key).replace(/\{(\w+)\}/g, (_, k) => (values || {})[k] ?? "");
  const STATUSES = ["pending", "active", "expired", "revoked", "expiring_soon"];
  const FINAL = ["saved", "cancelled", "timed_out", "interrupted", "failed"];
  const dateFormat = new Intl.DateTimeFormat(config.lang, { dateStyle: "medium", timeStyle: "short" });

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = config.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const err = new Error((data.error && data.error.message) || response.statusText);
      err.code = data.error && data.error.code; err.status = response.status;
      throw err;
    }
    return data;
  }

  function notice(text) { $("notice").textContent = text || ""; }
  function failed(err) { notice(t("error_generic", { message: err.message })); }

  // -- the list ---------------------------------------------------------------------------
  function statusOf(s) {
    if (s.status === "expiring_soon" || (s.status === "active" && s.expiring_soon === true)) return "expiring_soon";
    return STATUSES.includes(s.status) ? s.status : "pending";
  }

  function button(text, label, onClick, cls) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.setAttribute("aria-label", `${text}: ${label}`);
    if (cls) b.className = cls;
    b.addEventListener("click", onClick);
    return b;
  }

  function cell(row, content, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (content instanceof Node) td.append(content); else td.textContent = content;
    row.append(td);
    return td;
  }

  function render(sessions) {
    const rows = $("rows");
    rows.replaceChildren();
    if (!sessions.length) {
      const tr = document.createElement("tr");
      cell(tr, t("no_sessions")).colSpan = 5;
      rows.append(tr);
      return;
    }
    for (const s of sessions) {
      const tr = document.createElement("tr");
      tr.dataset.sessionId = s.id;
      const head = document.createElement("th");
      head.scope = "row"; head.textContent = s.label;
      tr.append(head);
      cell(tr, s.site, "site");
      const status = statusOf(s);
      const badge = document.createElement("span");
      badge.className = `badge ${status}`; badge.textContent = t(`status_${status}`);
      cell(tr, badge);
      cell(tr, s.last_used_at ? dateFormat.format(new Date(s.last_used_at)) : t("never"));
      const actions = cell(tr, "", "actions");
      if (status !== "revoked") {
        actions.append(button(L.relogin, s.label, () => relogin(s),
          status === "expired" || status === "expiring_soon" ? "primary" : ""));
        actions.append(button(L.revoke, s.label, () => confirmThen("revoke", s)));
      }
      actions.append(button(L.delete, s.label, () => confirmThen("delete", s)));
      rows.append(tr);
    }
  }

  async function refresh() {
    try { render((await api("GET", "/v1/sessions")).sessions); }
    catch (err) { failed(err); }
  }

  // -- dialogs: modal, Tab kept inside, focus returned to the opener -----------------------
  let opener = null;
  function focusables(dialog) {
    return [...dialog.querySelectorAll("button, input, iframe, [tabindex]")]
      .filter((el) => !el.disabled && !el.hidden && el.tabIndex >= 0 && el.offsetParent !== null);
  }
  function openDialog(dialog, first) {
    opener = document.activeElement;
    dialog.showModal();
    (first || focusables(dialog)[0] || dialog).focus();
  }
  function closeDialog(dialog) {
    if (dialog.open) dialog.close();
    if (opener && document.contains(opener)) opener.focus();
  }
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("keydown", (e) => {
      if (e.key !== "Tab") return;
      const items = focusables(dialog);
      if (!items.length) return;
      const first = items[0], last = items[items.length - 1];
      if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
      else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
    });
  }

  // -- Add site session: inline validation before anything is sent ------------------------
  const FIELDS = ["label", "start_url", "logged_in_selector", "login_url_pattern"];
  function httpUrl(value) {
    try { const u = new URL(value); return (u.protocol === "http:" || u.protocol === "https:") && !!u.hostname; }
    catch (e) { return false; }
  }
  function validate(values) {
    const errors = {};
    if (!values.label) errors.label = t("error_required");
    else if (values.label.length > 200) errors.label = t("error_too_long");
    if (!values.start_url) errors.start_url = t("error_required");
    else if (!httpUrl(values.start_url)) errors.start_url = t("error_url");
    if (values.logged_in_selector) {
      try { document.createDocumentFragment().querySelector(values.logged_in_selector); }
      catch (e) { errors.logged_in_selector = t("error_selector"); }
    }
    if (values.login_url_pattern && !httpUrl(values.login_url_pattern.replace(/\*+/g, "x"))) {
      errors.login_url_pattern = t("error_pattern");
    }
    if (!values.logged_in_selector && !values.login_url_pattern && !errors.login_url_pattern) {
      errors.login_url_pattern = t("error_pattern_or_selector");
    }
    return errors;
  }
  function showErrors(errors) {
    for (const name of FIELDS) {
      const input = $(`f-${name}`);
      $(`f-${name}-error`).textContent = errors[name] || "";
      if (errors[name]) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    }
  }
  function formValues() {
    const values = {};
    for (const name of FIELDS) values[name] = $(`f-${name}`).value.trim();
    return values;
  }
  $("add").addEventListener("click", () => {
    $("add-form").reset(); showErrors({}); $("add-error").textContent = "";
    openDialog($("add-dialog"), $("f-label"));
  });
  for (const name of FIELDS) {
    $(`f-${name}`).addEventListener("blur", () => {
      const values = formValues();
      if (!values[name] && name !== "login_url_pattern") return;
      const errors = validate(values);
      $(`f-${name}-error`).textContent = errors[name] || "";
      if (errors[name]) $(`f-${name}`).setAttribute("aria-invalid", "true");
      else $(`f-${name}`).removeAttribute("aria-invalid");
    });
  }
  $("add-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const values = formValues();
    const errors = validate(values);
    showErrors(errors);
    const bad = FIELDS.find((name) => errors[name]);
    if (bad) { $(`f-${bad}`).focus(); return; }
    const body = { label: values.label, start_url: values.start_url };
    if (values.logged_in_selector) body.logged_in_selector = values.logged_in_selector;
    if (values.login_url_pattern) body.login_url_pattern = values.login_url_pattern;
    try {
      const created = await api("POST", "/v1/sessions", body);
      closeDialog($("add-dialog"));
      notice(t("session_added"));
      refresh();
      openLogin(values.label, created.capture);
    } catch (err) { $("add-error").textContent = t("error_generic", { message: err.message }); }
  });
  $("add-dialog").querySelector("[data-close]").addEventListener("click", () => closeDialog($("add-dialog")));

  // -- the login dialog -------------------------------------------------------------------
  let capture = null, pollTimer = 0, saving = false;
  const STATE_TEXT = { queued: "capture_queued", open: "capture_open", saving: "capture_saving",
    saved: "capture_saved", not_logged_in: "capture_not_logged_in", timed_out: "capture_timed_out",
    cancelled: "capture_cancelled" };

  function showCapture(c) {
    capture = c;
    const stateEl = $("capture-state");
    const key = saving && (c.state === "open" || c.state === "queued") ? "capture_saving" : STATE_TEXT[c.state];
    stateEl.textContent = key ? t(key) : t("capture_failed", { reason: c.reason || c.state });
    stateEl.className = "state" + (c.state === "saved" ? " good" :
      ["not_logged_in", "timed_out", "failed", "interrupted"].includes(c.state) ? " bad" : "");
    const frame = $("liveview");
    if (c.liveview_url && !frame.src) { frame.src = c.liveview_url; frame.hidden = false; }
    const final = FINAL.includes(c.state);
    $("login-save").disabled = final || saving || !(c.state === "open" || c.state === "not_logged_in");
    $("login-cancel").textContent = final ? L.close : L.cancel;
    if (final) {
      stopPolling();
      notice("");
      frame.hidden = true; frame.removeAttribute("src");
      refresh();
      if (c.state === "saved") setTimeout(() => { if (capture === c) closeLogin(); }, 1500);
    }
  }

  async function poll() {
    if (!capture) return;
    try {
      const c = await api("GET", `/v1/captures/${encodeURIComponent(capture.id)}`);
      if (c.state !== "saving" && c.state !== "open") saving = false;
      showCapture(c);
    } catch (err) { $("capture-state").textContent = t("error_generic", { message: err.message }); }
    if (capture && !FINAL.includes(capture.state)) pollTimer = setTimeout(poll, 700);
  }
  function stopPolling() { clearTimeout(pollTimer); pollTimer = 0; }

  function openLogin(label, c) {
    saving = false;
    $("login-title").textContent = t("login_dialog_title", { label });
    const frame = $("liveview");
    frame.removeAttribute("src"); frame.hidden = true;
    openDialog($("login-dialog"), $("login-cancel"));
    showCapture(c);
    stopPolling(); pollTimer = setTimeout(poll, 300);
  }
  function closeLogin() {
    stopPolling(); capture = null; saving = false;
    const frame = $("liveview");
    frame.removeAttribute("src"); frame.hidden = true;
    closeDialog($("login-dialog"));
  }

  $("login-save").addEventListener("click", async () => {
    if (!capture) return;
    saving = true; showCapture({ ...capture, state: "saving" });
    try { showCapture(await api("POST", `/v1/captures/${encodeURIComponent(capture.id)}/save`)); }
    catch (err) { saving = false; $("capture-state").textContent = t("error_generic", { message: err.message }); }
  });
  async function cancelLogin() {
    if (capture && !FINAL.includes(capture.state)) {
      try { await api("POST", `/v1/captures/${encodeURIComponent(capture.id)}/cancel`); }
      catch (err) { /* already over: nothing to cancel */ }
    }
    closeLogin(); refresh();
  }
  $("login-cancel").addEventListener("click", cancelLogin);
  $("login-dialog").addEventListener("cancel", (e) => { e.preventDefault(); cancelLogin(); });

  async function relogin(s) {
    try {
      const started = await api("POST", `/v1/sessions/${encodeURIComponent(s.id)}/relogin`);
      openLogin(s.label, started.capture);
    } catch (err) { failed(err); }
  }

  // -- Revoke / Delete with a confirmation ------------------------------------------------
  let pending = null;
  function confirmThen(action, s) {
    pending = { action, session: s };
    $("confirm-title").textContent = t(`confirm_${action}_title`);
    $("confirm-text").textContent = t(`confirm_${action}_text`, { label: s.label });
    $("confirm-yes").textContent = L[action];
    openDialog($("confirm-dialog"), $("confirm-no"));
  }
  $("confirm-no").addEventListener("click", () => { pending = null; closeDialog($("confirm-dialog")); });
  $("confirm-yes").addEventListener("click", async () => {
    const p = pending; pending = null;
    closeDialog($("confirm-dialog"));
    if (!p) return;
    const path = `/v1/sessions/${encodeURIComponent(p.session.id)}`;
    try {
      if (p.action === "delete") await api("DELETE", path); else await api("POST", `${path}/revoke`);
      notice("");
    } catch (err) { failed(err); }
    refresh();
  });

  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, 5000);
  window.browserSessions = { refresh, config: { lang: config.lang, user: config.user } };
})();
