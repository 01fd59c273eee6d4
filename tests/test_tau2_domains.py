"""τ² databases as SQLite domains (core/domains/tau2_db.py): every source object is one row, every
declared foreign key holds, nested values are reachable by joins, the derived tools work, the real CLIs
generate and audit in-domain dialogues with the package's policy, and nothing of τ²'s evaluation tasks
is read or reaches the data."""

import json
import shutil
import sqlite3
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import cli, make_cfg
from datasets import load_from_disk
from toolturn.core.domains import prepare_domain, tau2_db
from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir

DOMAINS = ("airline", "retail", "telecom")
ROOT = tau2_db.default_data_root()

# table -> path of its rows in the source tree ("*" = every value of a dict or item of a list): written
# from the τ² files by hand, so the converter's table layout and its row counts are both checked
LAYOUT = {
    "airline": {
        "flights": "flights.*", "flight_dates": "flights.*.dates.*",
        "users": "users.*", "user_payment_methods": "users.*.payment_methods.*",
        "user_saved_passengers": "users.*.saved_passengers.*", "user_reservations": "users.*.reservations.*",
        "reservations": "reservations.*", "reservation_flights": "reservations.*.flights.*",
        "reservation_passengers": "reservations.*.passengers.*",
        "reservation_payment_history": "reservations.*.payment_history.*",
    },
    "retail": {
        "products": "products.*", "product_variants": "products.*.variants.*",
        "product_variant_options": "products.*.variants.*.options.*",
        "users": "users.*", "user_payment_methods": "users.*.payment_methods.*", "user_orders": "users.*.orders.*",
        "orders": "orders.*", "order_items": "orders.*.items.*", "order_item_options": "orders.*.items.*.options.*",
        "order_fulfillments": "orders.*.fulfillments.*",
        "order_fulfillment_tracking_id": "orders.*.fulfillments.*.tracking_id.*",
        "order_fulfillment_item_ids": "orders.*.fulfillments.*.item_ids.*",
        "order_payment_history": "orders.*.payment_history.*",
    },
    "telecom": {
        "plans": "plans.*", "devices": "devices.*", "lines": "lines.*", "customers": "customers.*",
        "customer_payment_methods": "customers.*.payment_methods.*", "customer_line_ids": "customers.*.line_ids.*",
        "customer_bill_ids": "customers.*.bill_ids.*", "bills": "bills.*", "bill_line_items": "bills.*.line_items.*",
    },
}
# foreign keys across collections, found by the converter on the data (besides every child -> parent key)
REFERENCES = {
    "airline": {("reservations", ("user_id",), "users"), ("user_reservations", ("reservation_id",), "reservations"),
                ("reservation_flights", ("flight_number",), "flights"),
                ("reservation_flights", ("flight_number", "date"), "flight_dates"),
                ("reservation_payment_history", ("payment_id",), "user_payment_methods")},
    "retail": {("orders", ("user_id",), "users"), ("user_orders", ("order_id",), "orders"),
               ("order_items", ("product_id",), "products"), ("order_items", ("item_id",), "product_variants"),
               ("order_fulfillment_item_ids", ("item_id",), "product_variants"),
               ("order_payment_history", ("payment_method_id",), "user_payment_methods")},
    "telecom": {("lines", ("plan_id",), "plans"), ("lines", ("device_id",), "devices"),
                ("bills", ("customer_id",), "customers"), ("customer_line_ids", ("line_id",), "lines"),
                ("customer_bill_ids", ("bill_id",), "bills")},
}


def source_tree(domain: str) -> dict:
    d = ROOT / domain
    return json.loads((d / "db.json").read_text()) if domain != "telecom" else tomllib.loads((d / "db.toml").read_text())


def count(tree, path: str) -> int:
    nodes = [tree]
    for part in path.split("."):
        if part == "*":
            nodes = [x for n in nodes for x in (n.values() if isinstance(n, dict) else n)]
        else:
            nodes = [n[part] for n in nodes if part in n]
    return len(nodes)


def domain_cfg(domain: str, *extra: str):
    return make_cfg(f"domain=tau2_{domain}", *extra).domain


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One real `toolturn-generate ... roles=rule num_dialogues=10` per domain, audited by `toolturn-audit`."""
    root = tmp_path_factory.mktemp("tau2_runs")
    out = {}
    for d in DOMAINS:
        run = root / d
        gen = cli("toolturn-generate", "pipeline=user_oriented", f"domain=tau2_{d}", "roles=rule", "num_dialogues=10",
                  "seed=0", f"out_dir={run}", "progress=false")
        assert gen.returncode == 0, gen.stderr[-2000:]
        audit = cli("toolturn-audit", str(run))
        out[d] = (run, audit)
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The three domains prepared (converted) into one run dir, as generation and evaluation do."""
    run = tmp_path_factory.mktemp("tau2_domains")
    return run, {d: prepare_domain(domain_cfg(d), run, 0) for d in DOMAINS}


def db(converted, domain: str) -> sqlite3.Connection:
    return sqlite3.connect(converted[1][domain].db_path)


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_source_object_is_one_row_and_every_key_holds(converted, domain):
    tree, conn = source_tree(domain), db(converted, domain)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == set(LAYOUT[domain])
    for table, path in LAYOUT[domain].items():
        assert conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] == count(tree, path), table
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    declared = set()
    for t in tables:
        by_id: dict[int, list] = {}
        for fk_id, _seq, ref, col, _to, *_ in conn.execute(f'PRAGMA foreign_key_list("{t}")'):
            by_id.setdefault(fk_id, [ref]).append(col)
        declared |= {(t, tuple(cols), ref) for ref, *cols in by_id.values()}
    assert REFERENCES[domain] <= declared
    report = json.loads((converted[1][domain].db_path.parent / tau2_db.REPORT).read_text())
    assert {t: v["rows"] for t, v in report["tables"].items()} == {t: count(tree, p) for t, p in LAYOUT[domain].items()}


def test_nested_values_are_reachable_by_joins(converted):
    air, conn = source_tree("airline"), db(converted, "airline")
    res = next(r for r in air["reservations"].values() if len(r["flights"]) >= 2)
    leg = res["flights"][1]
    day = air["flights"][leg["flight_number"]]["dates"][leg["date"]]
    row = conn.execute("SELECT fd.status, u.first_name, pm.source FROM reservation_flights rf "
                       "JOIN flight_dates fd USING (flight_number, date) JOIN reservations r USING (reservation_id) "
                       "JOIN users u ON u.user_id = r.user_id JOIN reservation_payment_history ph "
                       "ON ph.reservation_id = r.reservation_id AND ph.position = 0 "
                       "JOIN user_payment_methods pm ON pm.id = ph.payment_id "
                       "WHERE rf.reservation_id = ? AND rf.position = 1", (res["reservation_id"],)).fetchone()
    user = air["users"][res["user_id"]]
    assert row == (day["status"], user["name"]["first_name"],
                   user["payment_methods"][res["payment_history"][0]["payment_id"]]["source"])

    shop, conn = source_tree("retail"), db(converted, "retail")
    order = next(o for o in shop["orders"].values() if len(o["items"]) >= 2)
    item = order["items"][1]
    option, value = next(iter(item["options"].items()))
    row = conn.execute("SELECT o.value, pv.price, p.name FROM order_items oi JOIN order_item_options o "
                       "ON o.order_id = oi.order_id AND o.item_position = oi.position AND o.option = ? "
                       "JOIN product_variants pv USING (item_id) JOIN products p ON p.product_id = pv.product_id "
                       "WHERE oi.order_id = ? AND oi.position = 1", (option, order["order_id"])).fetchone()
    assert row == (value, shop["products"][item["product_id"]]["variants"][item["item_id"]]["price"],
                   shop["products"][item["product_id"]]["name"])

    tel, conn = source_tree("telecom"), db(converted, "telecom")
    customer = next(c for c in tel["customers"] if len(c["line_ids"]) >= 2)
    line = next(x for x in tel["lines"] if x["line_id"] == customer["line_ids"][1])
    plan = next(p for p in tel["plans"] if p["plan_id"] == line["plan_id"])
    row = conn.execute("SELECT p.name, c.address_city FROM customer_line_ids cl JOIN lines l USING (line_id) "
                       "JOIN plans p USING (plan_id) JOIN customers c USING (customer_id) "
                       "WHERE cl.customer_id = ? AND cl.position = 1", (customer["customer_id"],)).fetchone()
    assert row == (plan["name"], customer["address"]["city"])
    assert conn.execute("SELECT typeof(roaming_enabled), roaming_enabled FROM lines WHERE line_id = ?",
                        (line["line_id"],)).fetchone() == ("integer", int(line["roaming_enabled"]))


def test_derived_tools_work_in_the_sandbox(converted):
    run = converted[0]
    made = (run / "domains" / "tau2_airline" / "db.sqlite").stat().st_mtime_ns
    d = prepare_domain(domain_cfg("airline"), run, 0)  # the run's converted copy is reused, not rebuilt
    assert (run / "domains" / "tau2_airline" / "db.sqlite").stat().st_mtime_ns == made
    box = d.env.open_sandbox()
    legs = box.call("list_reservation_flights_for_reservation", {"reservation_id": "4WQ150"})
    assert legs.ok and [x["flight_number"] for x in legs.value] == ["HAT170", "HAT022"]
    day = box.call("get_flight_date", {"flight_number": "HAT170", "date": "2024-05-22"})
    assert day.ok and day.value["status"] == source_tree("airline")["flights"]["HAT170"]["dates"]["2024-05-22"]["status"]
    changed = box.call("update_reservation", {"reservation_id": "4WQ150", "cabin": "economy"})
    assert changed.ok and box.call("get_reservation", {"reservation_id": "4WQ150"}).value["cabin"] == "economy"
    dangling = box.call("create_reservation_flight", {"reservation_id": "4WQ150", "position": 9, "origin": "DFW",
                                                      "destination": "LAX", "flight_number": "NOPE", "date": "2024-05-22",
                                                      "price": 1})
    assert not dangling.ok and "FOREIGN KEY" in dangling.content  # the found reference is enforced
    box.close()


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS)
def test_cli_generates_audited_dialogues_under_the_packages_policy(runs, domain):
    run, audit = runs[domain]
    assert audit.returncode == 0 and "10 dialogues" in audit.stdout and " 0 mismatches" in audit.stdout, audit.stdout
    records = list(RunDir(run).records())
    assert len(records) == 10
    policy = (ROOT / domain / tau2_db.SOURCES[domain].default_policy[0]).read_text().strip()
    for r in records:
        assert r["meta"]["domain"] == f"tau2_{domain}" and r["meta"]["counts"]["tool_calls"] >= 1
        assert r["messages"][0]["role"] == "system" and policy in r["messages"][0]["content"]
        assert "tech_support_policy" not in r["messages"][0]["content"]


def strings(value, out: list[str]) -> list[str]:
    """Every string in a record, JSON-encoded fields (the dataset's tools/meta/arguments) opened up."""
    if isinstance(value, dict):
        for v in value.values():
            strings(v, out)
    elif isinstance(value, list):
        for v in value:
            strings(v, out)
    elif isinstance(value, str):
        out.append(value)
        if value[:1] in "{[":
            try:
                strings(json.loads(value), out)
            except ValueError:
                pass
    return out


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS)
def test_no_tau2_task_reaches_the_data(runs, domain):
    ids, texts = set(), set()
    for f in sorted((ROOT / domain).glob("tasks*.json")):  # read here only, to look for them in the data
        for task in json.loads(f.read_text()):
            ids.add(task["id"])
            instructions = task["user_scenario"]["instructions"]
            parts = [*(instructions.values() if isinstance(instructions, dict) else [instructions]),
                     task.get("ticket")]  # telecom's tickets are task text too
            texts |= {p.strip() for p in parts if isinstance(p, str) and len(p.strip()) >= 25}
    assert len(ids) >= 50 and len(texts) >= 9
    run = runs[domain][0]
    records = list(RunDir(run).records())
    rows = [dict(r) for r in load_from_disk(str(run / "dataset"))] if (run / "dataset" / "state.json").exists() \
        else [dict(r) for split in load_from_disk(str(run / "dataset")).values() for r in split]
    hay = "\n".join(strings(records, []) + strings(rows, []))
    assert (ROOT / domain / tau2_db.SOURCES[domain].default_policy[0]).read_text().strip()[:500] in hay  # can fail
    assert not {t["id"] for r in records for t in r["meta"]["tasks"]} & ids
    assert [i for i in ids if len(i) >= 6 and i in hay] == []
    assert [t[:60] for t in texts if t in hay] == []


OPENED: list[str] = []
_WATCH: list[bool] = []


def _audit(event, args):
    if _WATCH and event == "open" and isinstance(args[0], (str, Path)):
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)


def test_only_the_database_and_the_policy_are_opened(tmp_path):
    OPENED.clear()
    _WATCH.append(True)
    try:
        domains = {d: prepare_domain(domain_cfg(d), tmp_path, 0) for d in DOMAINS}
        manual = prepare_domain(domain_cfg("telecom", "domain.name=tau2_telecom_manual",
                                           "domain.policy_files=[main_policy.md,tech_support_manual.md]"), tmp_path, 0)
    finally:
        _WATCH.clear()
    read = {Path(p).relative_to(ROOT).as_posix() for p in OPENED if Path(p).is_relative_to(ROOT)}
    assert read == {"airline/db.json", "airline/policy.md", "retail/db.json", "retail/policy.md",
                    "telecom/db.toml", "telecom/main_policy.md", "telecom/tech_support_manual.md"}
    assert "<tech_support_policy>" in manual.policy and "<tech_support_policy>" not in domains["telecom"].policy
    assert manual.policy.index("<main_policy>") < manual.policy.index("<tech_support_policy>")
    ident = json.loads((tmp_path / "domains" / "tau2_airline" / "source.json").read_text())
    assert ident["version"] == "26.3" and set(ident["files"]) == {"db.json", "policy.md"}


def copy_domain(src: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in (tau2_db.SOURCES[src].db_file, *tau2_db.SOURCES[src].policy_files):
        shutil.copyfile(ROOT / src / name, dest / name)
    return dest


def test_cached_copy_follows_the_source_files(tmp_path):
    data = copy_domain("telecom", tmp_path / "data")
    cfg = domain_cfg("telecom", f"domain.data_dir={data}")
    prepare_domain(cfg, tmp_path / "run", 0)
    prepare_domain(cfg, tmp_path / "run", 0)  # a resume: reused
    with open(data / "db.toml", "a") as f:
        f.write('\n[[plans]]\nplan_id = "P9999"\nname = "Extra"\ndata_limit_gb = 1.0\nprice_per_month = 1.0\n'
                'data_refueling_price_per_gb = 1.0\n')
    with pytest.raises(ToolturnError, match="made from a different source.*differs in files"):
        prepare_domain(cfg, tmp_path / "run", 0)
    d = prepare_domain(cfg, tmp_path / "other", 0)
    assert d.schema.tables["plans"].row_count == 6
    assert json.loads((tmp_path / "other" / "domains" / "tau2_telecom" / "source.json").read_text())["version"] is None


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ToolturnError, match="τ² data directory not found"):
        prepare_domain(domain_cfg("airline", f"domain.data_dir={tmp_path / 'missing'}"), tmp_path / "r", 0)
    data = copy_domain("retail", tmp_path / "retail")
    (data / "db.json").write_text('{"products": {"1": {"name": "x"}')  # cut off
    with pytest.raises(ToolturnError, match="cannot parse τ² database .*db.json"):
        prepare_domain(domain_cfg("retail", f"domain.data_dir={data}"), tmp_path / "r", 0)
    assert not (tmp_path / "r" / "domains" / "tau2_retail" / "db.sqlite").exists()
    (data / "db.json").write_text('{"products": {"1": {"name": "x", "tags": ["a"]}, "2": {"name": "y", "tags": "b"}}}')
    with pytest.raises(ToolturnError, match=r"products\{\}.tags: mixes list and scalar"):
        prepare_domain(domain_cfg("retail", f"domain.data_dir={data}"), tmp_path / "r", 0)
    with pytest.raises(ToolturnError, match="not a policy document of τ² airline"):
        prepare_domain(domain_cfg("airline", "domain.policy_files=[tasks.json]"), tmp_path / "r", 0)
    with pytest.raises(ToolturnError, match="unknown τ² domain 'mock'"):
        prepare_domain(domain_cfg("airline", "domain.source=mock"), tmp_path / "r", 0)
    proc = cli("toolturn-generate", "domain=tau2_telecom", f"domain.data_dir={tmp_path / 'missing'}", "roles=rule",
               "num_dialogues=1", f"out_dir={tmp_path / 'run'}", "progress=false")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: τ² data")


def test_converter_shapes_on_small_trees(tmp_path):
    """Structs are inlined, maps keyed by data become child tables, key-value dicts become (key, value)
    rows, and a column is a foreign key only if all its values are keys."""
    tree = {
        "shops": {"s1": {"shop_id": "s1", "name": {"first_name": "A"}, "hours": {"mon": 9, "tue": 9},
                         "stock": {"2024-01-01": {"count": 3, "ok": True}}, "tags": ["x", "y"]},
                  "s2": {"shop_id": "s2", "name": {"first_name": "B"}, "hours": {"mon": 8, "tue": 7},
                         "stock": {}, "tags": []}},
        "visits": [{"visit_id": "v1", "shop_id": "s1"}, {"visit_id": "v2", "shop_id": "s2"}],
        "complaints": [{"complaint_id": "c1", "shop_id": "s1"}, {"complaint_id": "c2", "shop_id": "gone"}],
    }
    conv = tau2_db.convert_tree(tree)
    tables = {t.name: t for t in conv.tables}
    assert set(tables) == {"shops", "shop_stock", "shop_tags", "visits", "complaints"}
    assert [c.name for c in tables["shops"].columns] == ["shop_id", "first_name", "hours_mon", "hours_tue"]
    assert tables["shop_stock"].primary_key == ("shop_id", "stock_key") and tables["shop_stock"].column("ok").boolean
    assert tables["shop_tags"].primary_key == ("shop_id", "position") and len(tables["shop_tags"].rows) == 2
    assert tables["visits"].primary_key == ("visit_id",)
    assert [(fk.columns, fk.ref_table) for fk in tables["visits"].foreign_keys] == [(("shop_id",), "shops")]
    assert tables["complaints"].foreign_keys == []  # one shop_id is no shop's key: no foreign key
    tau2_db.write_sqlite(conv, tmp_path / "x.sqlite")
    conn = sqlite3.connect(tmp_path / "x.sqlite")
    assert conn.execute("SELECT count, ok FROM shop_stock").fetchall() == [(3, 1)]
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO shop_stock VALUES ('s1', '2024-01-02', 1, 2)")  # booleans are 0/1
