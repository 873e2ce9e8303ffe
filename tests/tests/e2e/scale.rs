//! Workers on three hosts of their own behind one bridge (bench/scale.py's smoke run): the users split exactly and every request is counted once.

use std::process::Command;
use std::time::Duration;

use squall_tests::{CountingTarget, NetHost, TestRun};

const SMOKE: &str = "scenarios:\n  smoke: { users: 900, spawn_rate: 900, duration: 8s }\nuser_classes:\n  u: { wait: { constant: 1s }, tasks: [ { get: /ok } ] }\n";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed (this test needs root and iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A switch namespace holding a bridge, a hub host (coordinator and target)
/// and `n` worker hosts, each cabled to the bridge by a veth pair made inside
/// the switch, as bench/scale.py builds them: nothing touches the root
/// namespace's interfaces. The hosts are [`NetHost`]s so that
/// [`TestRun::worker_on`] can start workers on them; every namespace goes on drop.
struct Lan {
    switch: String,
    hub: String,
    hosts: Vec<NetHost>,
}

impl Lan {
    const HUB_IP: &str = "10.214.0.1";

    fn create(n: usize) -> Lan {
        let tag = std::process::id() % 100_000;
        let lan = Lan {
            switch: format!("sqlan{tag}-sw"),
            hub: format!("sqlan{tag}-hub"),
            hosts: Vec::new(),
        };
        lan.namespace(&lan.switch);
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"]);
        lan.namespace(&lan.hub);
        lan.cable(&lan.hub, "hub", Self::HUB_IP);
        let mut lan = lan;
        for i in 0..n {
            let name = format!("sqlan{tag}-{i}");
            let addr = format!("10.214.0.{}", i + 2);
            lan.namespace(&name);
            lan.cable(&name, &format!("w{i}"), &addr);
            lan.hosts.push(NetHost {
                name,
                hub: lan.hub.clone(),
                host_ip: Self::HUB_IP.to_owned(),
                ns_ip: addr,
            });
        }
        lan
    }

    fn namespace(&self, ns: &str) {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    fn cable(&self, ns: &str, port: &str, addr: &str) {
        let (bridge_end, host_end) = (format!("{port}b"), format!("{port}n"));
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &bridge_end,
            "type",
            "veth",
            "peer",
            "name",
            &host_end,
        ]);
        ip(&["-n", &self.switch, "link", "set", &host_end, "netns", ns]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &bridge_end,
            "master",
            "br0",
        ]);
        ip(&["-n", &self.switch, "link", "set", &bridge_end, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &host_end,
        ]);
        ip(&["-n", ns, "link", "set", &host_end, "up"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // The NetHosts delete their own namespaces (and the hub) as they drop.
        self.hosts.clear();
        for ns in [&self.hub, &self.switch] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_three_hosts_of_a_bridge_split_the_users_exactly_and_count_every_request_once() {
    let lan = Lan::create(3);
    let target = CountingTarget::start_in(&lan.hub, &format!("{}:0", Lan::HUB_IP)).await;
    let run = TestRun::new(SMOKE)
        .bind(&format!("{}:0", Lan::HUB_IP))
        .token("t0k3n")
        .in_namespace(&lan.hub);
    let mut c = run.coordinator(3, &target.url(), &[]).await;
    let workers: Vec<_> = lan
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| run.worker_on(host, &format!("host{i}"), &["--threads", "1"]))
        .collect();
    let outputs = || {
        workers
            .iter()
            .map(|w| w.output())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}\n{}",
        c.output(),
        outputs()
    );
    let report = run.report();
    let entries = report["workers"].as_array().expect("workers");
    assert_eq!(entries.len(), 3, "{}", c.output());
    for w in entries {
        assert_eq!(w["peak_users"], 300, "each host runs a third: {w}");
        assert_eq!(w["lost"], false, "{w}");
        // 300 users, one request a second for about 8 s, from each host.
        assert!(
            w["requests"].as_u64().unwrap_or(0) > 1_500,
            "every host sent its share: {w}"
        );
    }
    assert_eq!(report["totals"]["failures"], 0, "{}", c.output());
    assert_eq!(
        report["totals"]["requests"].as_u64(),
        Some(target.total()),
        "every request once, across the hosts"
    );
}
