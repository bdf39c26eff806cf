//! What ships next to the binary: the Grafana dashboard charts metrics the
//! server really exports.

use std::{collections::BTreeSet, path::Path};

/// `flashdrop_…` names in a text, as whole words.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("flashdrop_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn the_dashboard_charts_only_metrics_the_server_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/dashboards/flashdrop.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    let exported = metric_names(&code);
    let charted = metric_names(&exprs);
    assert!(charted.len() >= 10, "{charted:?}");
    for name in &charted {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(base),
            "the dashboard charts {name}, which the server does not export"
        );
    }
}

/// Every `FLASHDROP_*` variable the server reads (`src/config/`).
fn variables_read(root: &Path) -> BTreeSet<String> {
    let config = ["mod.rs", "webhooks.rs"].map(|f| {
        let text = std::fs::read_to_string(root.join("src/config").join(f)).unwrap();
        text.split("#[cfg(test)]").next().unwrap().to_owned()
    });
    let code: String = config
        .join("\n")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut vars = BTreeSet::new();
    for (at, _) in code.match_indices("\"FLASHDROP_") {
        let name: String = code[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        vars.insert(name);
    }
    vars
}

/// An overlay as `kubectl kustomize` renders it.
fn render(root: &Path, overlay: &str) -> Vec<serde_yaml::Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("deploy/k8s/overlays").join(overlay))
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// The Kubernetes Deployment gives the server every setting it reads (and
/// none it does not), and its probes ask paths the server serves.
#[tokio::test]
async fn the_kubernetes_deployment_sets_what_the_server_reads_and_probes_real_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = variables_read(root);
    assert!(read.len() >= 15, "{read:?}");
    let app = crate::helpers::spawn_app().await;
    for overlay in ["dev", "production"] {
        let docs = render(root, overlay);
        let kind = |d: &serde_yaml::Value, k: &str, n: &str| {
            d["kind"].as_str() == Some(k) && d["metadata"]["name"].as_str() == Some(n)
        };
        let deployment = docs
            .iter()
            .find(|d| kind(d, "Deployment", "flashdrop"))
            .expect("the Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let mut set = BTreeSet::new();
        for env in container["env"].as_sequence().unwrap() {
            set.insert(env["name"].as_str().unwrap().to_owned());
        }
        for from in container["envFrom"].as_sequence().unwrap() {
            let map = from["configMapRef"]["name"].as_str().unwrap();
            let config = docs
                .iter()
                .find(|d| kind(d, "ConfigMap", map))
                .unwrap_or_else(|| panic!("{overlay}: the ConfigMap {map}"));
            for key in config["data"].as_mapping().unwrap().keys() {
                set.insert(key.as_str().unwrap().to_owned());
            }
        }
        // The grace period outlasts the whole stop: preStop, the drain,
        // requests in flight (10 s) and closing MongoDB's sessions (5 s).
        let pod = &deployment["spec"]["template"]["spec"];
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap();
        let drain = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
            .find_map(|d| d["data"]["FLASHDROP_DRAIN"].as_str())
            .and_then(|v| humantime::parse_duration(v).ok())
            .expect("FLASHDROP_DRAIN in a ConfigMap")
            .as_secs();
        assert!(
            grace > pre_stop + drain + 10 + 5,
            "{overlay}: a grace period of {grace} s does not cover {pre_stop} + {drain} + 10 + 5 s"
        );
        let missing: Vec<&String> = read.difference(&set).collect();
        assert!(
            missing.is_empty(),
            "{overlay}: the Deployment does not set {missing:?}"
        );
        let unknown: Vec<&String> = set.difference(&read).collect();
        assert!(
            unknown.is_empty(),
            "{overlay}: the server does not read {unknown:?}"
        );
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let path = container[probe]["httpGet"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{overlay}: a {probe}"));
            let status = app.http.get(app.url(path)).send().await.unwrap().status();
            assert_eq!(status, 200, "{overlay}: {probe} asks {path}");
        }
    }
}

/// Every test the README names to show a claim exists, so a pointer from
/// a claim to its test cannot rot into a name nothing runs: a test of this
/// suite as `module::test` (`module::prefix*` for several), a unit test as
/// its path in the crate (`auth::tests::test`, `store::scripts::file::test`).
#[test]
fn every_test_the_readme_names_exists() {
    let readme = include_str!("../../README.md");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut named, mut units) = (0, 0);
    for quoted in readme.split('`').skip(1).step_by(2) {
        let Some((path, test)) = quoted.rsplit_once("::") else {
            continue;
        };
        let is_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !is_name(test.trim_end_matches('*')) || !path.split("::").all(is_name) {
            continue;
        }
        let suite = root.join(format!("tests/api/{path}.rs"));
        let file = if suite.exists() {
            suite
        } else {
            // A unit test: its module's file under src/, an inline `tests`
            // module of that file included.
            let module = path
                .strip_suffix("::tests")
                .unwrap_or(path)
                .replace("::", "/");
            let in_src = [format!("src/{module}.rs"), format!("src/{module}/mod.rs")]
                .into_iter()
                .map(|f| root.join(f))
                .find(|f| f.exists());
            let Some(file) = in_src else { continue };
            if test == "tests" {
                continue;
            }
            units += 1;
            file
        };
        let source = std::fs::read_to_string(&file).unwrap();
        let found = match test.strip_suffix('*') {
            Some(prefix) => source.contains(&format!("fn {prefix}")),
            None => source.contains(&format!("fn {test}(")),
        };
        assert!(
            found,
            "the README names {quoted}, which {} does not have",
            file.strip_prefix(root).unwrap().display()
        );
        named += 1;
    }
    assert!(named > 20, "the README names {named} tests");
    assert!(units >= 7, "the README names {units} unit tests");
}
