import json
import re

from workers.browser.restore import plan_restore

STATE = {
    "cookies": [{"name": "sid", "value": "c1", "domain": "s.test", "path": "/"}],
    "origins": [
        {
            "origin": "https://s.test",
            "localStorage": [{"name": "token", "value": "t1"}],
            "sessionStorage": [{"name": "tab", "value": "s1"}],
        }
    ],
}


def test_cookies_in_context_storage_in_script() -> None:
    plan = plan_restore(STATE)
    assert plan.context_options == {"storage_state": {"cookies": STATE["cookies"], "origins": []}}
    assert plan.init_script is not None
    match = re.search(r"const entry = \((.*)\)\[location\.origin\]", plan.init_script)
    assert match is not None
    assert json.loads(match[1]) == {
        "https://s.test": {"local": [["token", "t1"]], "session": [["tab", "s1"]]}
    }


def test_indexeddb_origin_uses_playwright_restore() -> None:
    idb = [{"name": "db", "version": 1, "stores": []}]
    state = {"cookies": [], "origins": [{"origin": "https://s.test", "indexedDB": idb}]}
    plan = plan_restore(state)
    assert plan.context_options["storage_state"]["origins"] == [
        {"origin": "https://s.test", "localStorage": [], "indexedDB": idb}
    ]
    assert plan.init_script is None


def test_empty_state() -> None:
    plan = plan_restore({})
    assert plan.init_script is None
    assert plan.context_options == {"storage_state": {"cookies": [], "origins": []}}
