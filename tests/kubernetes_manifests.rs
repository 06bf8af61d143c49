//! configs/kubernetes/ agrees with Fulcrum and with the rest of the repository: the
//! embedded config passes Fulcrum's own parser, the Deployment's probes ask the
//! admin listener that config opens, its grace period outlasts the preStop sleep
//! and the drain, the discovered name is a headless Service of the manifests, and
//! the Grafana dashboard ConfigMap holds dashboards/*.json unchanged.
//! (.ci/run validates the manifests against the Kubernetes API schemas.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum::config::{BindAddr, Config, HumanDuration, ResolvedTimeouts};
use serde::Deserialize;
use serde_yaml::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A manifest: the file it is in, and the document.
struct Manifest {
    file: String,
    doc: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn what(&self) -> String {
        format!("configs/kubernetes/{}: {} {}", self.file, self.kind(), self.name())
    }
}

/// Every document of every `*.yaml` in configs/kubernetes/.
fn manifests() -> Vec<Manifest> {
    let dir = repo().join("configs/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !doc.is_null() {
                all.push(Manifest { file: file.clone(), doc });
            }
        }
    }
    assert!(all.len() >= 8, "only {} manifests in configs/kubernetes/", all.len());
    all
}

fn find<'a>(all: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    all.iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in configs/kubernetes/"))
}

/// The `data` entries of every ConfigMap, as (manifest, key, value).
fn config_map_data(all: &[Manifest]) -> Vec<(&Manifest, &str, &str)> {
    let mut entries = Vec::new();
    for map in all.iter().filter(|m| m.kind() == "ConfigMap") {
        for (key, value) in map.doc["data"].as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap_or_else(|| panic!("{}: a data key that is not a string", map.what()));
            let value = value.as_str().unwrap_or_else(|| panic!("{}: data.{key} is not a string", map.what()));
            entries.push((map, key, value));
        }
    }
    entries
}

/// Every `*.yaml` entry of a ConfigMap that is a Fulcrum config (has frontends or
/// backends), as (where, text).
fn fulcrum_configs(all: &[Manifest]) -> Vec<(String, &str)> {
    config_map_data(all)
        .into_iter()
        .filter(|(_, key, _)| key.ends_with(".yaml"))
        .filter(|(_, _, text)| {
            let doc: Value = serde_yaml::from_str(text).unwrap_or(Value::Null);
            doc.get("frontends").is_some() || doc.get("backends").is_some()
        })
        .map(|(map, key, text)| (format!("{} data.{key}", map.what()), text))
        .collect()
}

/// The Fulcrum container of the Deployment: the one running `fulcrum run`.
struct Fulcrum<'a> {
    deployment: &'a Manifest,
    container: &'a Value,
    /// The embedded config the container runs, parsed as plain YAML.
    config: Value,
}

fn fulcrum(all: &[Manifest]) -> Fulcrum<'_> {
    let runs_fulcrum = |c: &&Value| {
        c["command"].as_sequence().is_some_and(|cmd| cmd.iter().any(|w| w.as_str() == Some("fulcrum")))
            && c["args"].get(0).and_then(Value::as_str) == Some("run")
    };
    let (deployment, container) = all
        .iter()
        .filter(|m| m.kind() == "Deployment")
        .find_map(|m| {
            let containers = m.doc["spec"]["template"]["spec"]["containers"].as_sequence()?;
            Some((m, containers.iter().find(runs_fulcrum)?))
        })
        .expect("a Deployment with a container running `fulcrum run`");
    let what = deployment.what();
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--watch"), "{what}: without --watch a ConfigMap update is not applied: {args:?}");
    let at = args.iter().position(|a| *a == "--config" || *a == "-c").unwrap_or_else(|| panic!("{what}: no --config"));
    let path = Path::new(args[at + 1]);
    let (dir, file) = (path.parent().unwrap(), path.file_name().unwrap().to_str().unwrap());

    // The directory of the config file is a ConfigMap volume, mounted whole: a
    // subPath mount never sees the ConfigMap's updates.
    let mount = container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {}", dir.display()));
    assert!(mount.get("subPath").is_none(), "{what}: the config volume is mounted with subPath");
    let volume = deployment.doc["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{what}: no volume {:?}", mount["name"]));
    let map_name =
        volume["configMap"]["name"].as_str().unwrap_or_else(|| panic!("{what}: the config volume is no ConfigMap"));
    let map = find(all, "ConfigMap", map_name);
    let text = map.doc["data"][file].as_str().unwrap_or_else(|| panic!("{}: no data.{file}", map.what()));
    let config = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{} data.{file}: {e}", map.what()));
    Fulcrum { deployment, container, config }
}

/// The container port a probe's `port` names (a number, or a port's name).
fn probe_port(container: &Value, probe: &str) -> u16 {
    let port = &container[probe]["httpGet"]["port"];
    if let Some(number) = port.as_u64() {
        return u16::try_from(number).unwrap();
    }
    let name = port.as_str().unwrap_or_else(|| panic!("{probe}: no httpGet.port"));
    let declared = container["ports"].as_sequence().into_iter().flatten().find(|p| p["name"].as_str() == Some(name));
    let number =
        declared.and_then(|p| p["containerPort"].as_u64()).unwrap_or_else(|| panic!("{probe}: no port {name}"));
    u16::try_from(number).unwrap()
}

/// A whole number field, or `default` when it is absent.
fn number(value: &Value, default: u64) -> u64 {
    if value.is_null() {
        default
    } else {
        value.as_u64().unwrap_or_else(|| panic!("{value:?} is not a whole number"))
    }
}

/// The pods' terminationGracePeriodSeconds (Kubernetes' default: 30).
fn grace_period(deployment: &Manifest) -> u64 {
    number(&deployment.doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 30)
}

/// How long the preStop hook holds the container before SIGTERM.
fn pre_stop_sleep(container: &Value) -> Duration {
    let hook = &container["lifecycle"]["preStop"];
    if let Some(secs) = hook["sleep"]["seconds"].as_u64() {
        return Duration::from_secs(secs);
    }
    // exec: [sleep, N] or [sh, -c, "sleep N"]
    let words: Vec<&str> = hook["exec"]["command"]
        .as_sequence()
        .expect("preStop is a sleep action or an exec of sleep")
        .iter()
        .filter_map(Value::as_str)
        .flat_map(str::split_whitespace)
        .collect();
    let at = words.iter().position(|w| *w == "sleep").expect("preStop sleeps");
    Duration::from_secs(words[at + 1].parse().expect("sleep takes whole seconds"))
}

#[test]
fn every_embedded_fulcrum_config_passes_the_parser() {
    let all = manifests();
    let configs = fulcrum_configs(&all);
    assert!(!configs.is_empty(), "no ConfigMap in configs/kubernetes/ holds a Fulcrum config");
    for (what, text) in configs {
        if let Err(err) = Config::parse(text) {
            panic!("{what} is not a valid Fulcrum config:\n{}", err.lines().join("\n"));
        }
    }
}

#[test]
fn grace_period_outlasts_pre_stop_and_drain() {
    let all = manifests();
    let f = fulcrum(&all);
    let what = f.deployment.what();
    // Fulcrum's own duration syntax and default, read without the full parser.
    let drain = match f.config.get("timeouts").and_then(|t| t.get("drain")) {
        Some(value) => serde_yaml::from_value::<HumanDuration>(value.clone()).unwrap().0,
        None => ResolvedTimeouts::default().drain,
    };
    let sleep = pre_stop_sleep(f.container);
    assert!(sleep >= Duration::from_secs(1), "{what}: the preStop hook does not wait");
    let grace = Duration::from_secs(grace_period(f.deployment));
    assert!(
        grace > drain + sleep,
        "{what}: terminationGracePeriodSeconds ({grace:?}) must exceed preStop ({sleep:?}) + timeouts.drain ({drain:?}), \
         or SIGKILL cuts the drain short"
    );
    let replicas = number(&f.deployment.doc["spec"]["replicas"], 1);
    assert!(replicas >= 2, "{what}: {replicas} replica(s): the PodDisruptionBudget would block every drain");
    assert!(all.iter().any(|m| m.kind() == "PodDisruptionBudget"), "no PodDisruptionBudget");
}

#[test]
fn probes_ask_the_admin_listener_healthz() {
    let all = manifests();
    let f = fulcrum(&all);
    let what = f.deployment.what();
    let bind = f.config["admin"]["bind"].as_str().unwrap_or_else(|| panic!("{what}: its config has no admin.bind"));
    let admin: BindAddr = bind.parse().unwrap();
    // The kubelet probes the pod's address, and Prometheus scrapes it: not loopback.
    assert!(!admin.addr().ip().is_loopback(), "{what}: admin.bind {bind} is unreachable from outside the pod");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(f.container[probe]["httpGet"]["path"].as_str(), Some("/healthz"), "{what}: {probe} path");
        assert_eq!(
            probe_port(f.container, probe),
            admin.addr().port(),
            "{what}: {probe} port is not admin.bind's {bind}"
        );
    }
    // /healthz answers 503 while draining: that must take the pod out of rotation,
    // not get it restarted mid-drain.
    let liveness = &f.container["livenessProbe"];
    let tolerated = number(&liveness["periodSeconds"], 10) * number(&liveness["failureThreshold"], 3);
    let grace = grace_period(f.deployment);
    assert!(
        tolerated > grace,
        "{what}: the liveness probe gives up after {tolerated}s, within the {grace}s drain window"
    );
}

#[test]
fn discovered_names_are_headless_services() {
    let all = manifests();
    let f = fulcrum(&all);
    let mut discovered = 0;
    for backend in f.config["backends"].as_sequence().into_iter().flatten() {
        for server in backend["servers"].as_sequence().into_iter().flatten() {
            if server.get("discover").and_then(Value::as_str) != Some("dns") {
                continue;
            }
            let address = server["address"].as_str().unwrap();
            let (host, port) = address.rsplit_once(':').unwrap();
            let service = host.split('.').next().unwrap();
            let manifest = find(&all, "Service", service);
            assert_eq!(manifest.doc["spec"]["clusterIP"].as_str(), Some("None"), "{}: not headless", manifest.what());
            let port: u64 = port.parse().unwrap();
            let ports = manifest.doc["spec"]["ports"].as_sequence().unwrap();
            assert!(ports.iter().any(|p| p["port"].as_u64() == Some(port)), "{}: no port {port}", manifest.what());
            discovered += 1;
        }
    }
    assert!(discovered > 0, "the embedded config has no server with discover: dns");
}

#[test]
fn dashboard_config_map_holds_the_dashboards_unchanged() {
    let all = manifests();
    let in_maps: Vec<(&Manifest, &str, &str)> = config_map_data(&all)
        .into_iter()
        .filter(|(map, key, _)| {
            map.doc["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1") && key.ends_with(".json")
        })
        .collect();
    let dir = repo().join("dashboards");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let mut keys: Vec<String> = in_maps.iter().map(|(_, key, _)| key.to_string()).collect();
    keys.sort();
    assert_eq!(keys, files, "the grafana_dashboard ConfigMaps hold other dashboards than dashboards/*.json");
    for (map, key, text) in in_maps {
        let in_map: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{} data.{key}: {e}", map.what()));
        let file = std::fs::read_to_string(dir.join(key)).unwrap();
        let file: serde_json::Value = serde_json::from_str(&file).unwrap();
        assert!(
            in_map == file,
            "{} data.{key} differs from dashboards/{key}: run configs/kubernetes/generate-dashboard.sh",
            map.what()
        );
    }
}

#[test]
fn the_image_runs_as_the_deployment_says() {
    let all = manifests();
    let fulcrum = fulcrum(&all);
    let what = fulcrum.deployment.what();
    let dockerfile = std::fs::read_to_string(repo().join("configs/kubernetes/Dockerfile")).expect("the Dockerfile");
    let last = |instruction: &str| {
        (dockerfile.lines())
            .filter_map(|line| line.strip_prefix(instruction).map(str::trim))
            .next_back()
            .unwrap_or_else(|| panic!("Dockerfile: no {instruction}"))
            .to_string()
    };
    // The run stage's user is the one the pod runs as (and not root).
    let user = last("USER ");
    let uid: u64 = user.split(':').next().unwrap().parse().expect("a numeric USER");
    let pod = &fulcrum.deployment.doc["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsUser"].as_u64(), Some(uid), "{what}: runAsUser vs the Dockerfile's USER {user}");
    assert_ne!(uid, 0);
    // The binary is where the container's command finds it, and the image's own
    // default command reads the file the ConfigMap is mounted as.
    let command = fulcrum.container["command"][0].as_str().unwrap();
    assert!(last("ENTRYPOINT ").contains(&format!("/usr/local/bin/{command}\"")), "{what}: command {command:?}");
    let args: Vec<&str> = fulcrum.container["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    let config = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert!(last("CMD ").contains(&format!("\"{config}\"")), "Dockerfile CMD reads {config}");
    // What the build copies is what .dockerignore lets into the context.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for copied in ["Cargo.toml", "Cargo.lock", "src/"] {
        assert!(ignore.lines().any(|line| line == format!("!{copied}")), ".dockerignore keeps {copied}");
    }
}
