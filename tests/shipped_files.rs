//! The files shipped in configs/ agree with each other: Prometheus's scrape config
//! (configs/prometheus.yml) scrapes the admin listener of every shipped Fulcrum
//! config, the demo's (`fulcrum demo`, configs/demo.yaml) in particular.

use std::collections::BTreeSet;
use std::path::Path;

fn configs_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/configs"))
}

fn yaml(name: &str) -> serde_yaml::Value {
    let path = configs_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `static_configs` target of every job in configs/prometheus.yml.
fn scrape_targets() -> BTreeSet<String> {
    let prometheus = yaml("prometheus.yml");
    let jobs = prometheus["scrape_configs"].as_sequence().expect("scrape_configs is a list");
    let mut targets = BTreeSet::new();
    for job in jobs {
        assert_eq!(job["metrics_path"].as_str().unwrap_or("/metrics"), "/metrics", "job {:?}", job["job_name"]);
        for group in job["static_configs"].as_sequence().into_iter().flatten() {
            for target in group["targets"].as_sequence().expect("targets is a list") {
                targets.insert(target.as_str().expect("a target is a string").to_string());
            }
        }
    }
    targets
}

/// `admin.bind` of the Fulcrum config `name`, if it has an admin listener.
fn admin_bind(name: &str) -> Option<String> {
    yaml(name)["admin"]["bind"].as_str().map(str::to_string)
}

#[test]
fn prometheus_scrapes_the_demo_admin_listener() {
    let demo = admin_bind("demo.yaml").expect("configs/demo.yaml has an admin listener");
    // The same text `fulcrum demo` runs when the file is not at hand.
    let built_in: serde_yaml::Value = serde_yaml::from_str(fulcrum::demo::DEMO_CONFIG).unwrap();
    assert_eq!(built_in["admin"]["bind"].as_str(), Some(demo.as_str()));
    let targets = scrape_targets();
    assert!(targets.contains(&demo), "configs/prometheus.yml scrapes {targets:?}, not the demo's admin.bind {demo}");
}

#[test]
fn prometheus_scrapes_every_shipped_admin_listener() {
    let targets = scrape_targets();
    let mut checked = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".yaml") {
            continue;
        }
        if let Some(bind) = admin_bind(&name) {
            assert!(targets.contains(&bind), "configs/{name} admin.bind {bind} is not in prometheus.yml's {targets:?}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} shipped configs with an admin listener found");
}
