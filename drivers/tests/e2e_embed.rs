//! The embedding example (`examples/embed.rs`, a node over plain `std::net`) talks to a
//! `weft node`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{scratch, wait_until, NodeProc};

/// Kills the example when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_std_net_example_interoperates_with_weft_node() {
    // `cargo test` builds the examples next to the test binaries' folder.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/embed");
    assert!(
        example.exists(),
        "{} is built by cargo test",
        example.display()
    );
    let (dir, net) = scratch("embed");
    let node = NodeProc::start(dir.path(), &net, "node", "mio", "127.0.0.1:0", &[]);
    let heard = node.listen();
    let mut child = Command::new(&example)
        .args([net.as_str(), "127.0.0.1:0", &node.addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = Killed(child);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let got = heard.wait_for(1);
    let greeting = got[0].payload.as_deref().unwrap_or_default();
    assert!(greeting.starts_with("hello #"), "{greeting}");
    node.send("hello, example");
    wait_until("the example prints the broadcast", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.ends_with(": hello, example"))
    });
}
