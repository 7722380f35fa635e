//! The live `offload monitor` view on a real pseudo-terminal (made by a
//! small python3 helper, which every development machine has): it draws
//! the counts, quits on `q` and on Ctrl-C, and restores the terminal.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::Env;

/// Runs `offload monitor` on a 30x120 pty, sends `key` after the first
/// frames, and returns (exit status, screen text without escapes, whether
/// the alternate screen was left at the end).
const PTY_HELPER: &str = r#"
import os, pty, re, select, sys, time, fcntl, termios, struct
argv, key = sys.argv[1:-1], sys.argv[-1].encode().decode("unicode_escape").encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
out = b""
def pump(seconds, stop=None):
    global out
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return True
            if not data:
                return True
            out += data
            if stop and stop in re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", out):
                return False
    return False
pump(20, b"pending 2")
os.write(fd, key)
pump(20)
deadline = time.time() + 20
status = None
while time.time() < deadline:
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = os.waitstatus_to_exitcode(st)
        break
    time.sleep(0.02)
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", out).decode("utf-8", "replace")
print(status)
print("restored" if out.rstrip().endswith(b"\x1b[?1049l\x1b[?25h") else "not-restored")
print(text)
"#;

fn run_on_pty(env: &Env, key: &str) -> (String, bool, String) {
    let out = Command::new("python3")
        .args(["-c", PTY_HELPER])
        .arg(common::BIN)
        .args([
            "monitor",
            "--interval",
            "200ms",
            "--database-url",
            &env.url(),
            "--config",
        ])
        .arg(&env.config)
        .arg(key)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.splitn(3, '\n');
    let status = lines.next().unwrap().trim().to_owned();
    let restored = lines.next().unwrap().trim() == "restored";
    (status, restored, lines.next().unwrap_or("").to_owned())
}

#[test]
fn live_view_draws_and_quits() {
    let env = Env::new();
    env.enqueue(&["--type", "resize_image"]);
    env.enqueue(&["--type", "resize_image"]);
    for key in ["q", "\\x03", "\\x1b"] {
        let (status, restored, screen) = run_on_pty(&env, key);
        assert_eq!(status, "0", "key {key}: {screen}");
        assert!(restored, "terminal not restored after {key}");
        assert!(screen.contains("tasks by status"), "{screen}");
        assert!(screen.contains("pending 2"), "{screen}");
        assert!(screen.contains("resize_image"), "{screen}");
        assert!(screen.contains("running (0)"), "{screen}");
    }
}
