//! Running the workspace's real binaries.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Path of a binary built by `cargo build --workspace --bins` (what `scripts/test.sh` runs
/// first), found next to this test executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, done by scripts/test.sh)",
        path.display()
    );
    path
}

/// A child process whose stdout lines are collected (and echoed to stderr on failure).
#[derive(Debug)]
pub struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn spawn(mut command: Command) -> Self {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        let mut child = command.spawn().expect("spawn process");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Self { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Audit events (JSON lines with `"audit": true`) printed so far.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["audit"] == true)
            .collect()
    }

    /// Waits until a stdout line satisfies `pred` (or the process dies / time runs out).
    pub async fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..600 {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "process exited ({status}) before printing {what}; output:\n{}",
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; output:\n{}", self.lines().join("\n"));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
