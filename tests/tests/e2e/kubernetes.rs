//! The Kubernetes manifests, checked offline: each kustomize overlay rendered by `kubectl kustomize`, the schemas (kubernetes-validate), the policies (checkov), and the things that matter asserted on the rendered YAML.
//!
//! No cluster runs here. What a cluster would add, workers joining and
//! leaving mid-run, is the mechanism `compose.rs` exercises with containers.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;
use squall_tests::{bin, repo_root};

const OVERLAYS: [&str; 2] = ["headless", "serve"];

/// Checks that `tool` is installed: without it the test fails (`.ci/run`
/// installs it), so a missing tool can never pass for a checked manifest.
fn require_tool(tool: &str, test: &str) -> bool {
    let probe: &[&str] = if tool == "kubectl" {
        &["version", "--client"]
    } else {
        &["--version"]
    };
    let found = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        panic!("{test}: {tool} is not installed (.ci/run installs it)");
    }
    found
}

/// `kubectl kustomize deploy/kubernetes/overlays/NAME`, as text.
fn render_text(overlay: &str) -> String {
    let dir = repo_root().join("deploy/kubernetes/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 YAML")
}

/// The rendered overlay, one value per resource.
fn render(overlay: &str) -> Vec<Value> {
    let text = render_text(overlay);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            str_at(d, &["kind"]) == Some(kind) && str_at(d, &["metadata", "name"]) == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered overlay"))
}

/// Every pod template: (owner `Kind/name`, template).
fn pod_templates(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter_map(|d| {
            let template = at(d, &["spec", "template"])?;
            Some((
                format!(
                    "{}/{}",
                    str_at(d, &["kind"])?,
                    str_at(d, &["metadata", "name"])?
                ),
                template,
            ))
        })
        .collect()
}

fn containers(template: &Value) -> &Vec<Value> {
    at(template, &["spec", "containers"])
        .and_then(Value::as_sequence)
        .expect("containers")
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect()
}

/// Whether every label in `selector` is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .expect("selector")
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The Secret a container's `SQUALL_TOKEN` comes from: (name, key).
fn token_ref(container: &Value) -> (String, String) {
    let env = container["env"].as_sequence().expect("env");
    let token = env
        .iter()
        .find(|e| e["name"] == "SQUALL_TOKEN")
        .expect("SQUALL_TOKEN in env");
    let r = &token["valueFrom"]["secretKeyRef"];
    (
        r["name"].as_str().expect("secret name").to_owned(),
        r["key"].as_str().expect("secret key").to_owned(),
    )
}

#[test]
fn every_pod_runs_non_root_read_only_unprivileged_and_with_resources() {
    if !require_tool("kubectl", "kubernetes security contexts") {
        return;
    }
    for overlay in OVERLAYS {
        let docs = render(overlay);
        for d in &docs {
            let kind = str_at(d, &["kind"]).expect("kind");
            if kind != "Namespace" {
                assert_eq!(
                    str_at(d, &["metadata", "namespace"]),
                    Some("squall"),
                    "{overlay}: {kind} outside the namespace"
                );
            }
        }
        let templates = pod_templates(&docs);
        assert!(templates.len() >= 2, "{overlay}: pods {templates:?}");
        for (owner, t) in templates {
            let pod = &t["spec"];
            assert_eq!(pod["automountServiceAccountToken"], false, "{owner}");
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{owner}");
            assert_eq!(psc["runAsUser"], 10001, "{owner}: the image's user");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{owner}");
            for c in containers(t) {
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{owner}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{owner}");
                assert_eq!(sc["runAsNonRoot"], true, "{owner}");
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_yaml_ng::from_str::<Value>("[ALL]").expect("yaml"),
                    "{owner}"
                );
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            at(c, &["resources", bound, resource]).is_some(),
                            "{owner}: no {bound}.{resource}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn workers_dial_the_coordinator_service_with_the_token_from_the_secret() {
    if !require_tool("kubectl", "kubernetes worker link") {
        return;
    }
    for (overlay, coordinator_kind, coordinator_name) in [
        ("headless", "Job", "squall-run"),
        ("serve", "Deployment", "squall-coordinator"),
    ] {
        let docs = render(overlay);
        let worker =
            &containers(&find(&docs, "Deployment", "squall-worker")["spec"]["template"])[0];
        assert!(
            args(worker).contains(&"--master=squall-coordinator:5557"),
            "{overlay}: {:?}",
            args(worker)
        );
        assert!(args(worker).first() == Some(&"worker"));

        let service = find(&docs, "Service", "squall-coordinator");
        let port = &service["spec"]["ports"][0];
        assert_eq!(port["port"], 5557);
        let coordinator_pod = &find(&docs, coordinator_kind, coordinator_name)["spec"]["template"];
        assert!(
            selects(
                &service["spec"]["selector"],
                &coordinator_pod["metadata"]["labels"]
            ),
            "{overlay}: the Service does not select the coordinator pod"
        );
        let coordinator = &containers(coordinator_pod)[0];
        assert!(
            coordinator["ports"]
                .as_sequence()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == port["targetPort"] && p["containerPort"] == 5557),
            "{overlay}: targetPort names the coordinator's 5557"
        );
        assert!(
            args(coordinator).contains(&"--bind=0.0.0.0:5557"),
            "{overlay}: {:?}",
            args(coordinator)
        );

        let secret = find(&docs, "Secret", "squall-token");
        for c in [worker, coordinator] {
            let (name, key) = token_ref(c);
            assert_eq!(name, "squall-token", "{overlay}");
            assert!(
                secret["stringData"].get(key.as_str()).is_some(),
                "{overlay}: the Secret has no key {key}"
            );
        }

        // Only workers may reach the worker port.
        let policy = find(&docs, "NetworkPolicy", "squall-coordinator");
        let rule = &policy["spec"]["ingress"][0];
        assert_eq!(rule["ports"][0]["port"], 5557);
        let worker_labels =
            &find(&docs, "Deployment", "squall-worker")["spec"]["template"]["metadata"]["labels"];
        assert!(selects(
            &rule["from"][0]["podSelector"]["matchLabels"],
            worker_labels
        ));
        assert!(selects(
            &policy["spec"]["podSelector"]["matchLabels"],
            &coordinator_pod["metadata"]["labels"]
        ));
    }
}

#[test]
fn the_hpa_scales_workers_on_cpu_70_percent_between_3_and_10_and_the_pdb_guards_them() {
    if !require_tool("kubectl", "kubernetes autoscaling") {
        return;
    }
    let docs = render("headless");
    let hpa = find(&docs, "HorizontalPodAutoscaler", "squall-worker");
    assert_eq!(str_at(hpa, &["apiVersion"]), Some("autoscaling/v2"));
    let spec = &hpa["spec"];
    assert_eq!(spec["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(spec["scaleTargetRef"]["name"], "squall-worker");
    assert_eq!(spec["minReplicas"], 3);
    assert_eq!(spec["maxReplicas"], 10);
    let metric = &spec["metrics"][0]["resource"];
    assert_eq!(metric["name"], "cpu");
    assert_eq!(metric["target"]["type"], "Utilization");
    assert_eq!(metric["target"]["averageUtilization"], 70);
    // Utilization is measured against the request: it must be there.
    let workers = find(&docs, "Deployment", "squall-worker");
    assert!(
        at(
            &containers(&workers["spec"]["template"])[0],
            &["resources", "requests", "cpu"]
        )
        .is_some()
    );

    let pdb = find(&docs, "PodDisruptionBudget", "squall-worker");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selects(
        &pdb["spec"]["selector"]["matchLabels"],
        &workers["spec"]["template"]["metadata"]["labels"]
    ));

    // The Job starts when the HPA's minimum has attached.
    let job = &containers(&find(&docs, "Job", "squall-run")["spec"]["template"])[0];
    assert!(args(job).contains(&"--workers=3"), "{:?}", args(job));
}

#[test]
fn the_headless_job_runs_its_config_map_scenario_and_keeps_the_report_on_a_volume() {
    if !require_tool("kubectl", "kubernetes headless job") {
        return;
    }
    let docs = render("headless");
    let job = find(&docs, "Job", "squall-run");
    assert_eq!(job["spec"]["backoffLimit"], 0, "a verdict is not retried");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &containers(&job["spec"]["template"])[0];
    let a = args(c);
    assert_eq!(a[0], "coordinator");
    for flag in [
        "--file=/etc/squall/loadtest.yaml",
        "--out=/report",
        "--headless",
    ] {
        assert!(a.contains(&flag), "{flag} missing: {a:?}");
    }
    let mount = |path: &str| -> String {
        let m = c["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted on {path}"));
        m["name"].as_str().expect("name").to_owned()
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == name)
            .expect("volume")
    };
    let report = volume(&mount("/report"));
    let claim = report["persistentVolumeClaim"]["claimName"]
        .as_str()
        .expect("the report is on a PVC");
    find(&docs, "PersistentVolumeClaim", claim);

    // The ConfigMap the Job mounts (by its hashed name) holds a scenario
    // that the real coordinator accepts and that aims at the target Service.
    let scenario = volume(&mount("/etc/squall"));
    let config_map = find(
        &docs,
        "ConfigMap",
        scenario["configMap"]["name"].as_str().expect("configMap"),
    );
    let yaml = config_map["data"]["loadtest.yaml"]
        .as_str()
        .expect("loadtest.yaml in the ConfigMap");
    assert!(yaml.contains("host: http://squall-target:8080"));
    find(&docs, "Service", "squall-target");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("loadtest.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new(bin("coordinator"))
        .arg("validate")
        .arg(&file)
        .output()
        .expect("coordinator validate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_serve_overlay_runs_serve_mode_with_its_data_on_a_volume() {
    if !require_tool("kubectl", "kubernetes serve") {
        return;
    }
    let docs = render("serve");
    assert!(
        !docs.iter().any(|d| d["kind"] == "Job"),
        "serve mode has no Job"
    );
    let deployment = find(&docs, "Deployment", "squall-coordinator");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let c = &containers(&deployment["spec"]["template"])[0];
    assert_eq!(
        args(c),
        [
            "coordinator",
            "serve",
            "--bind=0.0.0.0:5557",
            "--http=0.0.0.0:8089",
            "--data=/data"
        ]
    );
    let http = find(&docs, "Service", "squall-coordinator-http");
    assert_eq!(http["spec"]["ports"][0]["port"], 8089);
    assert_eq!(
        http["spec"]["type"], "ClusterIP",
        "not exposed outside the cluster"
    );
    find(&docs, "PersistentVolumeClaim", "squall-data");
}

#[test]
fn the_keda_example_scales_the_same_workers_and_stays_out_of_the_kustomizations() {
    let root = repo_root().join("deploy/kubernetes");
    let text =
        std::fs::read_to_string(root.join("examples/keda-scaledobject.yaml")).expect("example");
    let so: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(so["kind"], "ScaledObject");
    assert_eq!(so["metadata"]["namespace"], "squall");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "squall-worker");
    assert_eq!(so["spec"]["minReplicaCount"], 3);
    assert_eq!(so["spec"]["maxReplicaCount"], 10);
    for k in ["base", "overlays/headless", "overlays/serve"] {
        let kustomization =
            std::fs::read_to_string(root.join(k).join("kustomization.yaml")).expect("read");
        assert!(!kustomization.contains("keda"), "{k} needs KEDA's CRDs");
    }
}

/// Renders both overlays into `dir` (one file each) for the external
/// checkers; `dir` must not be hidden: checkov skips hidden directories, such as tempfile's default `.tmpXXXX`.
fn render_into(dir: &Path) {
    for overlay in OVERLAYS {
        std::fs::write(dir.join(format!("{overlay}.yaml")), render_text(overlay)).expect("write");
    }
}

#[test]
fn the_rendered_manifests_match_the_kubernetes_schemas() {
    if !require_tool("kubectl", "kubernetes schemas")
        || !require_tool("kubernetes-validate", "kubernetes schemas")
    {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("squall-k8s-")
        .tempdir()
        .expect("tempdir");
    render_into(dir.path());
    // Strict: unknown fields are errors. 1.30 is the oldest Kubernetes the
    // manifests are meant for (autoscaling/v2, policy/v1 and all).
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.30.0"])
        .arg(dir.path().join("headless.yaml"))
        .arg(dir.path().join("serve.yaml"))
        .output()
        .expect("kubernetes-validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rendered_manifests_pass_checkov() {
    if !require_tool("kubectl", "checkov") || !require_tool("checkov", "checkov") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("squall-k8s-")
        .tempdir()
        .expect("tempdir");
    render_into(dir.path());
    // Every check runs; the few that do not fit are skipped in the manifests
    // themselves (checkov.io/skipN annotations, each with its reason).
    let out = Command::new("checkov")
        .arg("-d")
        .arg(dir.path())
        .args([
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--skip-download",
        ])
        .output()
        .expect("checkov");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Failed checks: 0"), "{report}");
}
