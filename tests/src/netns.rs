//! Network namespaces for tests: a second host joined to this one by a veth pair whose link can be cut, and a sealed host with nothing but loopback.

use std::path::Path;
use std::process::Command;

use crate::process::Proc;

/// A namespace `ns` with address `ns_ip`, reachable from here at `host_ip`.
/// Created by the test and removed on drop; needs root (CI runs as root).
pub struct NetHost {
    pub name: String,
    host_if: String,
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

impl NetHost {
    /// `tag` tells apart several hosts of one test; the process id apart concurrent tests.
    pub fn create(tag: u8) -> NetHost {
        let pid = std::process::id();
        let name = format!("sq{}-{tag}", pid % 100_000);
        let host_if = format!("sqh{}{tag}", pid % 100_000);
        let ns_if = format!("sqn{}{tag}", pid % 100_000);
        // A /30 per (process, tag) inside 10.213.0.0/16.
        let block = (pid.wrapping_mul(7) + u32::from(tag)) % 16_000;
        let (b, c) = (block / 64, (block % 64) * 4);
        let host_ip = format!("10.213.{}.{}", b % 250, c + 1);
        let ns_ip = format!("10.213.{}.{}", b % 250, c + 2);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        run(&["ip", "link", "set", &ns_if, "netns", &name]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up",
        ]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        NetHost {
            name,
            host_if,
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

    /// Starts `program` inside the namespace.
    pub fn spawn(&self, label: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
        spawn_in(&self.name, label, program, args, dir)
    }
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
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
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

fn spawn_in(namespace: &str, label: &str, program: &Path, args: &[&str], dir: &Path) -> Proc {
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
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
