//! Network namespaces for tests: a remote host joined to a hub host by a veth pair whose link can be cut, and a sealed host with nothing but loopback; nothing is added to the root namespace's interfaces.

use std::path::Path;
use std::process::Command;

use crate::process::Proc;

/// Two hosts of the test's own: the hub (namespace `hub`, address
/// `host_ip`), where the coordinator and the target run, and the remote host
/// (namespace `name`, address `ns_ip`), whose link to the hub can be cut.
/// Both ends of the veth pair live in namespaces the test made, so the
/// machine's own interfaces are never touched. Created by the test and
/// removed on drop; needs root (CI runs as root).
pub struct NetHost {
    pub name: String,
    pub hub: String,
    pub host_ip: String,
    pub ns_ip: String,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed (these tests need root and iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes namespace `name` with its loopback up, replacing one left over by an interrupted run.
fn add_namespace(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    run(&["ip", "netns", "add", name]);
    run(&["ip", "-n", name, "link", "set", "lo", "up"]);
}

impl NetHost {
    /// `tag` tells apart several hosts of one test; the process id apart concurrent tests.
    pub fn create(tag: u8) -> NetHost {
        let pid = std::process::id() % 100_000;
        let name = format!("sq{pid}-{tag}");
        let hub = format!("sq{pid}-{tag}h");
        add_namespace(&hub);
        add_namespace(&name);
        // The pair is made inside the hub, and one end moved to the remote
        // host: at no moment is either end in the root namespace.
        let (hub_if, ns_if) = ("sqhub", "sqremote");
        run(&[
            "ip", "-n", &hub, "link", "add", hub_if, "type", "veth", "peer", "name", ns_if,
        ]);
        run(&["ip", "-n", &hub, "link", "set", ns_if, "netns", &name]);
        // Each pair is alone in its two namespaces, so one /30 serves every test.
        let (host_ip, ns_ip) = ("10.213.0.1".to_owned(), "10.213.0.2".to_owned());
        run(&[
            "ip",
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            hub_if,
        ]);
        run(&["ip", "-n", &hub, "link", "set", hub_if, "up"]);
        run(&[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            ns_if,
        ]);
        run(&["ip", "-n", &name, "link", "set", ns_if, "up"]);
        NetHost {
            name,
            hub,
            host_ip,
            ns_ip,
        }
    }

    /// Drops every packet in and out of the namespace: TCP connections stall rather than reset.
    pub fn cut(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            run(&[
                "ip", "netns", "exec", &self.name, "iptables", "-A", chain, "!", "-i", "lo", "-j",
                "DROP",
            ]
            .into_iter()
            .map(|a| {
                if chain == "OUTPUT" && a == "-i" {
                    "-o"
                } else {
                    a
                }
            })
            .collect::<Vec<_>>());
        }
    }

    pub fn restore(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            run(&["ip", "netns", "exec", &self.name, "iptables", "-F", chain]);
        }
    }

    /// Starts `program` on the remote host.
    pub fn spawn(&self, label: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
        spawn_in(&self.name, label, program, args, dir)
    }
}

/// A TCP listener on `addr` inside namespace `ns`, for a server that runs in
/// this process: a socket stays in the namespace it was made in, so only the
/// short-lived thread that makes it enters the namespace.
pub fn listen_in(ns: &str, addr: &str) -> std::net::TcpListener {
    let path = format!("/var/run/netns/{ns}");
    let addr = addr.to_owned();
    std::thread::spawn(move || {
        let handle = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("enter namespace {path}: {e}"));
        let listener =
            std::net::TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking");
        listener
    })
    .join()
    .expect("listener thread")
}

/// A namespace with only its own loopback, for tests that must use a fixed
/// port (such as the default one the README types) and so would otherwise
/// meet whatever else on the machine uses it, another test run included.
/// Created by the test and removed on drop; needs root (CI runs as root).
pub struct SealedHost {
    name: String,
}

impl SealedHost {
    /// `tag` tells apart several hosts of one test; the process id apart concurrent tests.
    pub fn create(tag: u8) -> SealedHost {
        let name = format!("sqs{}-{tag}", std::process::id() % 100_000);
        add_namespace(&name);
        SealedHost { name }
    }

    /// Starts `program` inside the namespace.
    pub fn spawn(&self, label: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
        spawn_in(&self.name, label, program, args, dir)
    }
}

impl Drop for SealedHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub(crate) fn spawn_in(
    namespace: &str,
    label: &str,
    program: &Path,
    args: &[&str],
    dir: &Path,
) -> Proc {
    let mut full = vec![
        "netns",
        "exec",
        namespace,
        program.to_str().expect("utf8 path"),
    ];
    full.extend_from_slice(args);
    Proc::spawn(label, Path::new("/usr/sbin/ip"), &full, dir)
}

impl Drop for NetHost {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        for ns in [&self.name, &self.hub] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
