//! The container image and the docker-compose cluster, on the real Docker engine: the image built offline, 1,000 users over 4 worker containers counted exactly, worker containers stopped and added mid-run, nothing left behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use squall_tests::{
    ApiClient, Compose, build_image, eventually, exec, has_event, read_report, repo_root,
    require_docker, run_ok, wait_until, worker_entry,
};

const COMPOSE_FILE: &str = "docker/docker-compose.yml";

/// A compose cluster's files on the host: scenario, token, report directory.
struct Files {
    dir: tempfile::TempDir,
    out: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("report");
        std::fs::create_dir(&out).expect("report dir");
        Files { dir, out }
    }

    /// The variables that point the compose file at these files and make
    /// the report directory writable by the coordinator's user: the image's
    /// non-root user when the tests run as root, else the caller's own uid
    /// (as docs/deploy.md tells users to do).
    fn env(&self, workers: usize, scenario: Option<&str>) -> Vec<(&'static str, String)> {
        let uid = run_ok(Command::new("id").arg("-u")).trim().to_owned();
        let gid = run_ok(Command::new("id").arg("-g")).trim().to_owned();
        let (uid, gid) = if uid == "0" {
            std::os::unix::fs::chown(&self.out, Some(10001), Some(10001)).expect("chown report");
            ("10001".to_owned(), "10001".to_owned())
        } else {
            (uid, gid)
        };
        let mut env = vec![
            ("SQUALL_IMAGE", build_image().to_owned()),
            ("SQUALL_WORKERS", workers.to_string()),
            ("SQUALL_REPORT_DIR", self.out.display().to_string()),
            ("SQUALL_UID", uid),
            ("SQUALL_GID", gid),
        ];
        if let Some(yaml) = scenario {
            let file = self.dir.path().join("scenario.yaml");
            std::fs::write(&file, yaml).expect("scenario");
            let token = self.dir.path().join("squall.env");
            let secret = format!("e2e-{:x}", std::process::id() as u64 * 7919 + 17);
            std::fs::write(&token, format!("SQUALL_TOKEN={secret}\n")).expect("env file");
            env.push(("SQUALL_SCENARIO_FILE", file.display().to_string()));
            env.push(("SQUALL_ENV_FILE", token.display().to_string()));
        }
        env
    }
}

/// Requests the demo target has served, read inside its container from the
/// one route it does not count.
fn served(target: &str) -> u64 {
    let body = exec(
        target,
        &[
            "coordinator",
            "probe",
            "http://127.0.0.1:8080/__squall/stats",
        ],
    )
    .unwrap_or_else(|e| panic!("target stats: {e}"));
    let stats: serde_json::Value = serde_json::from_str(body.trim()).expect("stats JSON");
    stats["served"].as_u64().expect("served count")
}

/// Waits until the target has served more than `n` requests.
async fn traffic(compose: &Compose, target: &str, n: u64) {
    assert!(
        wait_until(Duration::from_secs(60), || served(target) > n).await,
        "the target never served {n} requests\n{}",
        compose.logs()
    );
}

/// Waits until the coordinator has started the run on `workers` workers; returns when.
async fn run_started(compose: &Compose, coordinator: &str, workers: usize) -> Instant {
    let wanted = format!("on {workers} worker(s)");
    let started = wait_until(Duration::from_secs(60), || {
        let out = Command::new("docker")
            .args(["logs", coordinator])
            .output()
            .expect("docker logs");
        String::from_utf8_lossy(&out.stderr).contains(&wanted)
            || String::from_utf8_lossy(&out.stdout).contains(&wanted)
    })
    .await;
    assert!(started, "the run never started\n{}", compose.logs());
    Instant::now()
}

/// The report's totals equal what the target served: nothing lost, nothing twice.
fn assert_counted_exactly(report: &serde_json::Value, served: u64) {
    let requests = report["totals"]["requests"].as_u64().expect("totals");
    assert!(requests > 0, "no requests");
    eprintln!("report totals {requests} requests, the target served {served}");
    assert_eq!(requests, served, "report totals vs the target's own count");
}

/// A worker's id in the report: the container's hostname (its short id) and pid 1.
fn worker_id(container: &str) -> String {
    format!("{}-1", &container[..12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_runs_1000_users_over_4_worker_containers_and_counts_exactly_what_the_target_served()
 {
    if !require_docker("compose 1,000 users") {
        return;
    }
    let files = Files::new();
    // The shipped scenario (docker/loadtest.yaml: 1,000 users, 20 s) and token file.
    let compose = Compose::new("e2e-1k", &[COMPOSE_FILE], &files.env(4, None));
    let t0 = Instant::now();
    compose.ok(&["up", "-d", "--scale", "worker=4"]);
    let coordinator = compose.container("coordinator");
    let target = compose.container("target");
    let workers = compose.containers("worker");
    assert_eq!(workers.len(), 4);
    let attached = run_started(&compose, &coordinator, 4).await;
    eprintln!(
        "up to all 4 workers attached: {:.1} s",
        (attached - t0).as_secs_f64()
    );

    // Service names resolve inside the containers: the probe resolves them
    // with the same glibc resolver the binaries use.
    for (from, url) in [
        (&workers[0], "tcp://coordinator:5557"),
        (&workers[3], "http://target:8080/__squall/stats"),
        (&coordinator, "http://target:8080/__squall/stats"),
    ] {
        exec(from, &["coordinator", "probe", url])
            .unwrap_or_else(|e| panic!("{url} does not resolve or answer: {e}"));
    }
    let unknown = exec(
        &workers[1],
        &["coordinator", "probe", "tcp://no-such-service:1"],
    )
    .expect_err("an unknown name must not resolve");
    assert!(unknown.contains("cannot resolve"), "{unknown}");

    let code = compose
        .exit_code(&coordinator, Duration::from_secs(90))
        .await;
    let logs = compose.logs();
    assert_eq!(code, 0, "{logs}");
    eprintln!(
        "compose run: {:.1} s from up to the verdict",
        t0.elapsed().as_secs_f64()
    );

    let report = read_report(&files.out);
    assert!(files.out.join("report.html").is_file(), "report.html");
    assert_counted_exactly(&report, served(&target));
    let entries = report["workers"].as_array().expect("workers");
    assert_eq!(entries.len(), 4, "{report}");
    for w in &workers {
        let entry = worker_entry(&report, &worker_id(w));
        assert_eq!(entry["lost"], false);
        assert_eq!(entry["peak_users"], 250, "1,000 users split exactly over 4");
    }
    assert!(
        logs.contains("attached to coordinator http://coordinator:5557"),
        "workers say where they attached:\n{logs}"
    );

    compose.down();
    assert_eq!(
        compose.leftovers(),
        Vec::<String>::new(),
        "down -v leaves nothing"
    );
}

const STEADY: &str = "host: http://target:8080\nscenarios:\n  steady: { users: 300, spawn_rate: 600, duration: 14s }\nuser_classes:\n  u: { wait: { constant: 200ms }, tasks: [ { get: /api/health, expect: { status: 200 } } ] }\n";
/// Longer: `docker-compose up --scale` on a busy machine takes seconds before the new container even starts.
const LONGER: &str = "host: http://target:8080\nscenarios:\n  longer: { users: 300, spawn_rate: 600, duration: 24s }\nuser_classes:\n  u: { wait: { constant: 200ms }, tasks: [ { get: /api/health, expect: { status: 200 } } ] }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_container_has_its_share_moved_and_every_request_counted_once() {
    if !require_docker("compose worker stopped") {
        return;
    }
    let files = Files::new();
    let compose = Compose::new("e2e-stop", &[COMPOSE_FILE], &files.env(3, Some(STEADY)));
    compose.ok(&["up", "-d", "--scale", "worker=3"]);
    let coordinator = compose.container("coordinator");
    let target = compose.container("target");
    let workers = compose.containers("worker");
    run_started(&compose, &coordinator, 3).await;
    traffic(&compose, &target, 3000).await;
    // `docker stop`: SIGTERM, then the worker delivers its last snapshots and exits.
    let victim = &workers[1];
    run_ok(Command::new("docker").args(["stop", "-t", "15", victim]));

    let code = compose
        .exit_code(&coordinator, Duration::from_secs(90))
        .await;
    assert_eq!(code, 0, "{}", compose.logs());
    let report = read_report(&files.out);
    assert_counted_exactly(&report, served(&target));
    assert_eq!(report["workers"].as_array().map(Vec::len), Some(3));
    assert_eq!(worker_entry(&report, &worker_id(victim))["lost"], true);
    assert!(
        has_event(&report, "its load moved to 2 survivor(s)"),
        "{}",
        report["timeline"]
    );
    for survivor in [&workers[0], &workers[2]] {
        assert_eq!(
            worker_entry(&report, &worker_id(survivor))["peak_users"],
            150,
            "the survivors took over its 100 users"
        );
    }
    compose.down();
    assert_eq!(compose.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_container_added_mid_run_gets_a_share_as_when_an_autoscaler_adds_one() {
    if !require_docker("compose worker added") {
        return;
    }
    let files = Files::new();
    let compose = Compose::new("e2e-scale", &[COMPOSE_FILE], &files.env(2, Some(LONGER)));
    compose.ok(&["up", "-d", "--scale", "worker=2"]);
    let coordinator = compose.container("coordinator");
    let target = compose.container("target");
    let before = compose.containers("worker");
    run_started(&compose, &coordinator, 2).await;
    traffic(&compose, &target, 500).await;
    let scaling = Instant::now();
    compose.ok(&[
        "up",
        "-d",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "worker=3",
        "worker",
    ]);
    let after = compose.containers("worker");
    let newcomer = after
        .iter()
        .find(|id| !before.contains(id))
        .expect("a third worker container");
    let joined = wait_until(Duration::from_secs(30), || {
        let out = Command::new("docker")
            .args(["logs", &coordinator])
            .output()
            .expect("docker logs");
        String::from_utf8_lossy(&out.stdout).contains("joined")
            || String::from_utf8_lossy(&out.stderr).contains("joined")
    })
    .await;
    eprintln!(
        "scale-up to the join: {:.1} s",
        scaling.elapsed().as_secs_f64()
    );
    assert!(joined, "the third worker never joined\n{}", compose.logs());

    let code = compose
        .exit_code(&coordinator, Duration::from_secs(90))
        .await;
    assert_eq!(code, 0, "{}", compose.logs());
    let report = read_report(&files.out);
    assert_counted_exactly(&report, served(&target));
    assert!(
        has_event(&report, "joined; load rebalanced over 3 workers"),
        "{}",
        report["timeline"]
    );
    let joined = worker_entry(&report, &worker_id(newcomer));
    assert_eq!(joined["lost"], false);
    assert_eq!(joined["peak_users"], 100, "a third of 300 users");
    compose.down();
    assert_eq!(compose.leftovers(), Vec::<String>::new());
}

/// What the image holds, from the file list of a container made from it (never started).
fn image_files(image: &str) -> Vec<String> {
    let id = run_ok(Command::new("docker").args(["create", image]))
        .trim()
        .to_owned();
    let tar = Command::new("docker")
        .args(["export", &id])
        .output()
        .expect("docker export");
    run_ok(Command::new("docker").args(["rm", &id]));
    assert!(tar.status.success(), "docker export failed");
    let list = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(list.path(), &tar.stdout).expect("write tar");
    run_ok(Command::new("tar").arg("-tf").arg(list.path()))
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect()
}

#[test]
fn the_image_is_small_non_root_shell_less_and_resolves_names() {
    if !require_docker("image") {
        return;
    }
    let image = build_image();
    let inspect = run_ok(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{.Size}} {{.Config.User}} {{.Config.WorkingDir}}",
        image,
    ]));
    let fields: Vec<&str> = inspect.split_whitespace().collect();
    let size: u64 = fields[0].parse().expect("size");
    eprintln!("image {image}: {:.1} MB", size as f64 / 1e6);
    assert!(size < 40_000_000, "image is {size} bytes");
    assert_eq!(&fields[1..], ["10001:10001", "/work"]);

    let files = image_files(image);
    for wanted in [
        "usr/local/bin/coordinator",
        "usr/local/bin/worker",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/nsswitch.conf",
        "etc/passwd",
    ] {
        assert!(
            files.iter().any(|f| f == wanted),
            "{wanted} missing: {files:?}"
        );
    }
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox"] {
        assert!(!files.iter().any(|f| f == shell), "{shell} in the image");
    }

    // Both entry points run as the non-root user, and names resolve through
    // /etc/hosts and DNS (the host name `localhost`, Docker's --add-host).
    let out = run_ok(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "--add-host",
        "squall-probe-host:127.0.0.1",
        image,
        "coordinator",
        "--version",
    ]));
    assert!(out.starts_with("coordinator "), "{out}");
    let out = run_ok(Command::new("docker").args(["run", "--rm", image, "worker", "--version"]));
    assert!(out.starts_with("worker "), "{out}");
    let refused = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--add-host",
            "squall-probe-host:127.0.0.1",
            image,
            "coordinator",
            "probe",
            "tcp://squall-probe-host:1",
        ])
        .output()
        .expect("docker run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("squall-probe-host:1 (127.0.0.1:1)"),
        "the name resolved through /etc/hosts: {stderr}"
    );
}

#[test]
fn the_dockerfile_runtime_stage_is_the_one_build_image_makes() {
    let runtime = |path: &str| -> Vec<String> {
        let text = std::fs::read_to_string(repo_root().join(path)).expect("Dockerfile");
        let stage = text
            .rsplit_once("FROM scratch")
            .map(|(_, stage)| stage.to_owned())
            .unwrap_or_else(|| panic!("{path} has no FROM scratch stage"));
        stage
            .lines()
            .map(|l| {
                // COPY takes the files from the build stage in one and from
                // the context in the other; the destinations must match.
                l.replace("--from=build ", "")
                    .replace(" /rootfs", " rootfs")
                    .trim()
                    .to_owned()
            })
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    };
    assert_eq!(
        runtime("docker/Dockerfile"),
        runtime("docker/Dockerfile.local")
    );
}

#[test]
fn both_compose_files_are_valid_and_publish_nothing_but_serve_http_on_loopback() {
    if !require_docker("compose files") {
        return;
    }
    for file in [COMPOSE_FILE, "docker/docker-compose.serve.yml"] {
        let compose = Compose::new("config", &[file], &[]);
        let config = compose.ok(&["config"]);
        let published: Vec<&str> = config
            .lines()
            .filter(|l| l.trim_start().starts_with("published") || l.contains(":8089"))
            .collect();
        if file == COMPOSE_FILE {
            assert!(published.is_empty(), "{file} publishes {published:?}");
        } else {
            assert!(
                config.contains("127.0.0.1") && !published.is_empty(),
                "{file}: serve's HTTP port on 127.0.0.1 only:\n{config}"
            );
        }
        assert!(config.contains("read_only: true"), "{file}");
        assert!(config.contains("no-new-privileges:true"), "{file}");
        // Nothing was created, so Drop's `down` has nothing to remove.
    }
}

const SERVE_FILE: &str = "docker/docker-compose.serve.yml";
const SERVE_RUN: &str = "host: http://target:8080\nscenarios:\n  short: { users: 100, spawn_rate: 200, duration: 5s }\nuser_classes:\n  u: { wait: { constant: 100ms }, tasks: [ { get: /api/health } ] }\n";

/// `docker-compose.serve.yml`: `coordinator serve` with its runs on a named
/// volume the non-root user can write, workers that stay attached between
/// runs, and every request of each run counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_serve_runs_twice_on_workers_that_stay_attached() {
    if !require_docker("compose serve") {
        return;
    }
    let files = Files::new();
    let mut env = files.env(2, Some(SERVE_RUN));
    let token_file = env
        .iter()
        .find(|(k, _)| *k == "SQUALL_ENV_FILE")
        .map(|(_, v)| v.clone())
        .expect("token file");
    let token = std::fs::read_to_string(&token_file)
        .expect("token")
        .trim()
        .trim_start_matches("SQUALL_TOKEN=")
        .to_owned();
    // A free loopback port for the published HTTP port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    env.push(("SQUALL_HTTP_PORT", port.to_string()));
    let compose = Compose::new("e2e-serve", &[SERVE_FILE], &env);
    compose.ok(&["up", "-d", "--scale", "worker=2"]);
    let target = compose.container("target");
    let api = ApiClient::new(&format!("127.0.0.1:{port}"), Some(&token));
    eventually(Duration::from_secs(90), "2 workers ready", || {
        let api = api.clone();
        async move {
            let r = tokio::time::timeout(Duration::from_secs(5), api.get("/api/workers"))
                .await
                .ok()?;
            let workers = (r.status == 200).then(|| r.json())?;
            let ready = workers
                .as_array()?
                .iter()
                .filter(|w| w["state"] == "ready")
                .count();
            (ready == 2).then_some(())
        }
    })
    .await;
    assert_eq!(
        api.anonymous().get("/api/workers").await.status,
        401,
        "the token is needed"
    );
    for round in 1..=2 {
        let before = served(&target);
        let started = api
            .post("/api/runs", "application/yaml", SERVE_RUN.as_bytes())
            .await;
        assert_eq!(started.status, 202, "{}", started.text());
        let id = started.json()["run_id"]
            .as_str()
            .expect("run id")
            .to_owned();
        let done = eventually(Duration::from_secs(60), "the run to finish", || {
            let api = api.clone();
            let path = format!("/api/runs/{id}");
            async move {
                let r = api.get(&path).await.json();
                (r["state"] != "running").then_some(r)
            }
        })
        .await;
        assert_eq!(
            done["state"],
            "done",
            "round {round}: {done}\n{}",
            compose.logs()
        );
        let report = api.get(&format!("/api/runs/{id}/report.json")).await.json();
        assert_eq!(
            report["workers"].as_array().map(Vec::len),
            Some(2),
            "{report}"
        );
        assert_counted_exactly(&report, served(&target) - before);
    }
    compose.down();
    assert_eq!(
        compose.leftovers(),
        Vec::<String>::new(),
        "down -v leaves nothing, the runs' volume included"
    );
}
