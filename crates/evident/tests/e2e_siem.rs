//! SIEM export formats end to end: a real server, events of every OCSF class, exported as
//! OCSF, ECS and CEF over HTTP (`/api/v1/audit-log?format=…`) and with `evident export
//! --format …`, the two byte for byte alike; every record carries its entry's integrity
//! coordinates. OCSF is validated against the OCSF 1.5.0 schema by the PyPI package
//! ocsf-emitter (tests/siem/validate_ocsf.py), ECS against the ECS 8.17 field definitions
//! checked in as tests/siem/ecs_fields.json, CEF with an independent parser of the CEF
//! header and extension grammar written here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, http_client};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The ocsf-emitter version scripts/test.sh installs (into target/siem-venv).
const OCSF_EMITTER_VERSION: &str = "0.3.0";

/// The Python of the venv scripts/test.sh makes for this test (`EVIDENT_SIEM_PYTHON` wins).
fn siem_python() -> PathBuf {
    if let Ok(p) = std::env::var("EVIDENT_SIEM_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/siem-venv/bin/python")
}

/// Runs the OCSF validator on `file`: (passed, its output). Fails (never skips) when the
/// validator cannot run.
fn run_ocsf_validator(file: &Path) -> (bool, String) {
    let python = siem_python();
    let install = format!(
        "run scripts/test.sh (it installs it), or `python3 -m venv target/siem-venv && \
         target/siem-venv/bin/pip install ocsf-emitter=={OCSF_EMITTER_VERSION}`, or set \
         EVIDENT_SIEM_PYTHON to a Python that has it"
    );
    let version = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('ocsf-emitter'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {install}", python.display()));
    let found = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert_eq!(
        found,
        OCSF_EMITTER_VERSION,
        "ocsf-emitter {OCSF_EMITTER_VERSION} is needed by this test ({}): {install}",
        String::from_utf8_lossy(&version.stderr)
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/siem/validate_ocsf.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts that the OCSF records in `file` are valid; and that the validator does refuse
/// records that break the schema (a required attribute missing, an attribute OCSF does not
/// define, a wrong `type_uid`, a wrong caption), so that its pass means something.
fn validate_ocsf(file: &Path) {
    let (ok, out) = run_ocsf_validator(file);
    assert!(
        ok && out.contains("records valid"),
        "OCSF validation failed:\n{out}"
    );
    let text = std::fs::read_to_string(file).unwrap();
    let mut records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.retain(|r| r["class_uid"] != 3001);
    let auth = records.iter().position(|r| r["class_uid"] == 3002).unwrap();
    records.swap(0, auth);
    assert!(records.len() >= 4);
    // One break per record, each reported on its own line.
    records[0].as_object_mut().unwrap().remove("user");
    records[1]["metadata"]["colour"] = json!("blue");
    let type_uid = records[2]["type_uid"].as_u64().unwrap();
    records[2]["type_uid"] = json!(type_uid + 1);
    records[3]["severity"] = json!("Severe");
    let broken: Vec<String> = records[..4].iter().map(Value::to_string).collect();
    let broken_file = file.with_extension("broken");
    std::fs::write(&broken_file, broken.join("\n") + "\n").unwrap();
    let (ok, out) = run_ocsf_validator(&broken_file);
    assert!(!ok, "broken records passed:\n{out}");
    for (line, problem) in [
        (1, "user"),
        (2, "metadata.colour"),
        (3, "type_uid"),
        (4, "severity"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("line {line} ")) && l.contains(problem)),
            "line {line}: {problem} not reported:\n{out}"
        );
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("line 1 ")).count(),
        1,
        "{out}"
    );
}

/// ECS field definitions (tests/siem/ecs_fields.json).
struct EcsFields(Value);

impl EcsFields {
    fn load() -> EcsFields {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/siem/ecs_fields.json");
        EcsFields(serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
    }

    /// Every problem of one ECS document: a field ECS does not define (outside the custom
    /// `evident.*` set), a value of the wrong type, a value outside the allowed ones.
    fn problems(&self, doc: &Value) -> Vec<String> {
        let mut leaves = BTreeMap::new();
        flatten("", doc, &mut leaves);
        let fields = &self.0["fields"];
        let allowed = &self.0["allowed_values"];
        let mut problems = Vec::new();
        for (name, def) in fields.as_object().unwrap() {
            if def["required"] == true && !leaves.contains_key(name) {
                problems.push(format!("{name}: required by ECS, missing"));
            }
        }
        for (name, value) in &leaves {
            if name.starts_with("evident.") {
                continue;
            }
            let Some(def) = fields.get(name.as_str()) else {
                problems.push(format!("{name}: not an ECS field"));
                continue;
            };
            let values: Vec<&Value> = match value {
                Value::Array(items) if def["array"] == true => items.iter().collect(),
                Value::Array(_) => {
                    problems.push(format!("{name}: an array, ECS defines one value"));
                    continue;
                }
                v => vec![v],
            };
            for v in values {
                let ok = match def["type"].as_str().unwrap() {
                    "keyword" | "match_only_text" => v.is_string(),
                    "long" => v.is_i64() || v.is_u64(),
                    "ip" => v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
                    "date" => v.as_str().is_some_and(|s| {
                        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
                    }),
                    other => panic!("type {other} not handled"),
                };
                if !ok {
                    problems.push(format!("{name}: {v} is not of ECS type {}", def["type"]));
                }
                if let Some(list) = allowed.get(name.as_str()) {
                    let names: Vec<&str> = match list {
                        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
                        Value::Object(o) => o.keys().map(String::as_str).collect(),
                        _ => unreachable!(),
                    };
                    if !names.contains(&v.as_str().unwrap_or("")) {
                        problems.push(format!("{name}: {v} is not an allowed value"));
                    }
                }
            }
        }
        // Each event.type one its categories expect.
        for category in doc["event"]["category"].as_array().into_iter().flatten() {
            let expected = &allowed["event.category"][category.as_str().unwrap()];
            for t in doc["event"]["type"].as_array().into_iter().flatten() {
                if !expected.as_array().is_some_and(|e| e.contains(t)) {
                    problems.push(format!(
                        "event.type {t} is not expected for category {category}"
                    ));
                }
            }
        }
        problems
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                // The context is free-form JSON inside the custom field set.
                if name == "evident.context" {
                    out.insert(name, v.clone());
                } else {
                    flatten(&name, v, out);
                }
            }
        }
        Value::Null => {}
        v => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// A CEF record as the spec's grammar reads it.
#[derive(Debug)]
struct Cef {
    header: Vec<String>,
    ext: BTreeMap<String, String>,
}

/// The extension keys of the CEF spec ("Implementing ArcSight CEF", rev. 25) that Evident
/// uses: the dictionary's key names, the custom ones with their labels.
const CEF_KEYS: [&str; 32] = [
    "act",
    "cat",
    "cn1",
    "cn1Label",
    "cs1",
    "cs1Label",
    "cs2",
    "cs2Label",
    "cs3",
    "cs3Label",
    "cs4",
    "cs4Label",
    "cs5",
    "cs5Label",
    "cs6",
    "cs6Label",
    "c6a2",
    "c6a2Label",
    "duser",
    "dvchost",
    "externalId",
    "flexString1",
    "flexString1Label",
    "flexString2",
    "flexString2Label",
    "msg",
    "outcome",
    "requestClientApplication",
    "rt",
    "src",
    "start",
    "suser",
];

/// Parses one CEF line, independently of the writer: the header is seven `|`-separated
/// fields after `CEF:` in which only `\|` and `\\` are escapes; the extension is
/// `key=value` pairs separated by spaces, where in values only `\=`, `\\`, `\n` and `\r` are
/// escapes and every unescaped `=` ends a key.
fn parse_cef(line: &str) -> Result<Cef, String> {
    let rest = line.strip_prefix("CEF:").ok_or("no CEF: prefix")?;
    if line.contains('\n') || line.contains('\r') {
        return Err("a raw line break".into());
    }
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = rest.chars();
    while header.len() < 7 {
        match chars.next() {
            None => return Err(format!("header has {} fields", header.len())),
            Some('\\') => match chars.next() {
                Some(c @ ('\\' | '|')) => field.push(c),
                other => return Err(format!("bad header escape \\{other:?}")),
            },
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
        }
    }
    let ext_text: Vec<char> = chars.collect();
    // Positions of the unescaped '='.
    let mut equals = Vec::new();
    let mut i = 0;
    while i < ext_text.len() {
        match ext_text[i] {
            '\\' => i += 2,
            '=' => {
                equals.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut ext = BTreeMap::new();
    let mut key_starts = Vec::new();
    for &eq in &equals {
        let mut start = eq;
        while start > 0
            && (ext_text[start - 1].is_ascii_alphanumeric() || ext_text[start - 1] == '_')
        {
            start -= 1;
        }
        if start == eq || (start > 0 && ext_text[start - 1] != ' ') {
            return Err(format!("an unescaped '=' at {eq} that ends no key"));
        }
        key_starts.push(start);
    }
    if key_starts.first().is_some_and(|s| *s != 0) {
        return Err("extension does not start with a key".into());
    }
    for (n, (&start, &eq)) in key_starts.iter().zip(&equals).enumerate() {
        let key: String = ext_text[start..eq].iter().collect();
        let end = key_starts
            .get(n + 1)
            .map_or(ext_text.len(), |next| next - 1);
        let raw = &ext_text[eq + 1..end];
        let mut value = String::new();
        let mut j = 0;
        while j < raw.len() {
            if raw[j] == '\\' {
                match raw.get(j + 1) {
                    Some('\\') => value.push('\\'),
                    Some('=') => value.push('='),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    other => return Err(format!("bad extension escape \\{other:?} in {key}")),
                }
                j += 2;
            } else {
                value.push(raw[j]);
                j += 1;
            }
        }
        if ext.insert(key.clone(), value).is_some() {
            return Err(format!("key {key} twice"));
        }
    }
    Ok(Cef { header, ext })
}

fn lines(text: &str) -> Vec<&str> {
    assert!(text.ends_with('\n'), "the export ends with a line end");
    text.lines().collect()
}

#[test]
fn exports_ocsf_ecs_and_cef_over_http_and_the_cli() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    // A request with a malformed key: the node writes evident.auth.malformed_key.
    let refused = http_client()
        .get(format!("{}/api/v1/audit-log", server.url))
        .bearer_auth("evk_000000000000_notakeyatall")
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // A key made over the API: the node writes evident.key.created.
    let created = server
        .client()
        .post(format!("{}/api/v1/keys", server.url))
        .bearer_auth(&node.owner_key)
        .header("content-type", "application/json")
        .body(r#"{"role": "writer"}"#)
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let awkward = "al|ce=x\\y";
    let events = json!([
        {"actor": {"id": awkward, "kind": "user", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (a=b|c\\d)"},
         "action": "auth.login", "target": {"kind": "service", "id": "portal"},
         "outcome": "failure", "severity": "warning", "context": {"reason": "bad\npassword = \\ |"}},
        {"actor": {"id": "bob", "kind": "user", "ip": "2001:db8::7"},
         "action": "auth.logout", "target": {"kind": "service", "id": "portal"},
         "outcome": "success", "severity": "info"},
        {"actor": {"id": "admin", "kind": "user"},
         "action": "user.created", "target": {"kind": "user", "id": "carol"},
         "outcome": "success", "severity": "notice"},
        {"actor": {"id": "carol", "kind": "user"},
         "action": "user.password.changed", "target": {"kind": "user", "id": "carol"},
         "outcome": "success", "severity": "notice"},
        {"actor": {"id": "deploy-bot", "kind": "service"},
         "action": "key.rotated", "target": {"kind": "key", "id": "k-1"},
         "outcome": "success", "severity": "notice"},
        {"actor": {"id": "evk_abc", "kind": "api_key", "ip": "198.51.100.2"},
         "action": "document.viewed", "target": {"kind": "document", "id": "d=1|2"},
         "outcome": "denied", "severity": "error"},
        {"actor": {"id": "ops", "kind": "user"},
         "action": "config.threshold.changed", "target": {"kind": "node", "id": "n1"},
         "outcome": "success", "severity": "critical", "occurred_at": "2026-03-14T09:00:00Z"},
        {"actor": {"id": "ops", "kind": "user"},
         "action": "thing.happened", "target": {"kind": "node", "id": "n1"},
         "outcome": "success", "severity": "emergency"},
    ]);
    api.append(&events).unwrap();
    let entries = api.all_entries();
    let n = entries.len();
    let actions: Vec<&str> = entries
        .iter()
        .map(|(_, _, e)| e["action"].as_str().unwrap())
        .collect();
    for needed in [
        "evident.key.created",
        "evident.auth.malformed_key",
        "auth.login",
    ] {
        assert!(actions.contains(&needed), "{needed} in {actions:?}");
    }

    // Unknown formats are refused, naming the value.
    let bad = api.get("/api/v1/audit-log?format=leef");
    let body = bad.assert_error(400, "invalid_parameter", Some("format"));
    assert!(body.to_string().contains("leef"), "{body}");
    let cli_bad = server
        .cli(&node.owner_key, &["export", "--format", "leef"])
        .code(2);
    assert!(cli_bad.stderr.contains("leef"), "{}", cli_bad.stderr);

    let dir = node.tmp.path();
    let mut exported = BTreeMap::new();
    for format in ["ocsf", "ecs", "cef"] {
        // The first n entries: later exports add their own evident.log.exported events.
        let http = api.get(&format!("/api/v1/audit-log?format={format}&limit={n}"));
        assert_eq!(http.status, 200, "{}", http.text());
        let file = dir.join(format!("export.{format}"));
        server
            .export(&node.owner_key, format, &file, &["--limit", &n.to_string()])
            .ok();
        let cli = std::fs::read_to_string(&file).unwrap();
        assert_eq!(http.text(), cli, "{format}: HTTP and CLI exports differ");
        assert_eq!(lines(&cli).len(), n, "{format}: one line per event");
        exported.insert(format, (file, cli));
    }

    // Each export was recorded with its format, before it left.
    let recorded: Vec<String> = api
        .all_entries()
        .iter()
        .filter(|(_, _, e)| e["action"] == "evident.log.exported")
        .map(|(_, _, e)| e["context"]["format"].as_str().unwrap().to_owned())
        .collect();
    for format in ["ocsf", "ecs", "cef"] {
        // One over HTTP, one by the CLI.
        assert_eq!(
            recorded.iter().filter(|f| *f == format).count(),
            2,
            "{recorded:?}"
        );
    }

    // OCSF: the schema, the class rule, the coordinates.
    let (ocsf_file, ocsf) = &exported["ocsf"];
    validate_ocsf(ocsf_file);
    for (line, (seq, hash, event)) in lines(ocsf).iter().zip(&entries) {
        let r: Value = serde_json::from_str(line).unwrap();
        let action = event["action"].as_str().unwrap();
        let class = if action.starts_with("auth.") || action.starts_with("evident.auth.") {
            3002
        } else if ["user.", "key.", "evident.key."]
            .iter()
            .any(|p| action.starts_with(p))
        {
            3001
        } else {
            6003
        };
        assert_eq!(r["class_uid"], class, "{action}");
        let ev = &r["unmapped"]["evident"];
        assert_eq!(ev["seq"], *seq);
        assert_eq!(ev["leaf_index"], *seq);
        assert_eq!(ev["entry_hash"], hash.as_str());
        assert_eq!(ev["seal"], event["seal"]);
        assert_eq!(ev["node_id"], event["node_id"]);
        assert_eq!(r["metadata"]["sequence"], *seq);
        assert_eq!(r["metadata"]["uid"], event["id"]);
    }

    // ECS: the field definitions, the coordinates.
    let ecs_fields = EcsFields::load();
    for (line, (seq, hash, event)) in lines(&exported["ecs"].1).iter().zip(&entries) {
        let doc: Value = serde_json::from_str(line).unwrap();
        let problems = ecs_fields.problems(&doc);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}\n{doc}",
            event["action"]
        );
        assert_eq!(doc["event"]["sequence"], *seq);
        assert_eq!(doc["event"]["action"], event["action"]);
        assert_eq!(doc["evident"]["entry_hash"], hash.as_str());
        assert_eq!(doc["evident"]["seal"], event["seal"]);
        assert_eq!(doc["evident"]["leaf_index"], *seq);
        assert_eq!(doc["user"]["id"], event["actor"]["id"]);
        assert_eq!(doc["source"]["ip"], event["actor"]["ip"]);
        assert_eq!(doc["user_agent"]["original"], event["actor"]["user_agent"]);
    }

    // The checkers refuse what breaks the definitions and the grammar.
    let mut doc: Value = serde_json::from_str(lines(&exported["ecs"].1)[0]).unwrap();
    doc["event"]["colour"] = json!("blue");
    doc["event"]["outcome"] = json!("denied");
    doc["source"] = json!({"ip": "not-an-ip"});
    doc["event"]["type"] = json!(["installation"]);
    let problems = ecs_fields.problems(&doc).join("\n");
    for problem in ["event.colour", "event.outcome", "source.ip", "installation"] {
        assert!(
            problems.contains(problem),
            "{problem} not reported: {problems}"
        );
    }
    for bad in [
        "CEF:0|Evident|evident|1|a|b|1|suser=a=b",
        "CEF:0|Evident|evident|1|a|b|1|msg=a\\xb",
        "CEF:0|Evident|evident|1|a\\q|b|1|rt=1",
        "CEF:0|Evident|evident|1|a|b|rt=1",
    ] {
        assert!(parse_cef(bad).is_err(), "{bad}");
    }

    // CEF: the grammar, every value back as it was.
    for (line, (seq, hash, event)) in lines(&exported["cef"].1).iter().zip(&entries) {
        let cef = parse_cef(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let action = event["action"].as_str().unwrap();
        assert_eq!(cef.header[0], "0");
        assert_eq!(cef.header[1], "Evident");
        assert_eq!(cef.header[2], "evident");
        assert_eq!(cef.header[4], action);
        assert_eq!(
            cef.header[5],
            format!("{action} {}", event["outcome"].as_str().unwrap())
        );
        let severity: u8 = cef.header[6].parse().unwrap();
        assert!(severity <= 10);
        for key in cef.ext.keys() {
            assert!(CEF_KEYS.contains(&key.as_str()), "{key} is not a CEF key");
        }
        let ext = |k: &str| cef.ext.get(k).map(String::as_str);
        assert_eq!(ext("suser"), event["actor"]["id"].as_str());
        assert_eq!(ext("act"), Some(action));
        assert_eq!(ext("cs1Label"), Some("seq"));
        assert_eq!(ext("cs1"), Some(seq.to_string().as_str()));
        assert_eq!(ext("cs2"), event["node_id"].as_str());
        assert_eq!(ext("cs3"), Some(hash.as_str()));
        assert_eq!(ext("cs4"), event["seal"].as_str());
        assert_eq!(ext("cs5"), Some(seq.to_string().as_str()));
        assert_eq!(ext("cs6"), event["tenant"].as_str());
        assert_eq!(ext("msg"), Some(event["context"].to_string().as_str()));
        assert_eq!(
            ext("requestClientApplication"),
            event["actor"]["user_agent"].as_str()
        );
        let target = format!(
            "{}:{}",
            event["target"]["kind"].as_str().unwrap(),
            event["target"]["id"].as_str().unwrap()
        );
        assert_eq!(ext("flexString1"), Some(target.as_str()));
        match event["actor"]["ip"].as_str() {
            Some(ip) if ip.contains(':') => assert_eq!(ext("c6a2"), Some(ip)),
            ip => assert_eq!(ext("src"), ip),
        }
    }
}
