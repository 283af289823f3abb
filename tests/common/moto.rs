//! moto's STS server (from `<repo>/.venv`, which `scripts/test.sh` creates) for the tests that
//! need real STS answers: started inside a test's namespace, counted from its request recorder
//! (`MOTO_ENABLE_RECORDING`: one JSON line per request with its body, whose `Action=` names the
//! operation), killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{Namespace, TempDir, http};

/// The port moto listens on, inside the test's namespace.
pub(crate) const MOTO_PORT: u16 = 5000;

/// moto's STS server inside a namespace on 127.0.0.1:[`MOTO_PORT`], recording every request;
/// killed on drop.
pub(crate) struct Moto {
    child: Child,
    recording: PathBuf,
    _dir: TempDir,
}

impl Moto {
    pub(crate) fn endpoint() -> String {
        format!("http://127.0.0.1:{MOTO_PORT}")
    }

    /// Starts moto in `namespace` and waits until it answers; `None` after a skip notice when
    /// the venv is missing (a failure under CI).
    pub(crate) fn start(namespace: &Namespace, test: &str) -> Option<Moto> {
        // scripts/test.sh: python3 -m venv .venv && .venv/bin/pip install 'moto[server]'
        let server = super::installed(test, super::repo().join(".venv/bin/moto_server"))?;
        let dir = TempDir::new();
        let recording = PathBuf::from(dir.file("recording.jsonl", b""));
        let log = std::fs::File::create(PathBuf::from(dir.file("moto.log", b""))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", namespace.name()])
            .arg(&server)
            .args(["-H", "127.0.0.1", "-p", &MOTO_PORT.to_string()])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning moto_server");
        let moto = Moto {
            child,
            recording,
            _dir: dir,
        };
        let up = namespace.run_in(|| async {
            let deadline = Instant::now() + Duration::from_secs(30);
            let address: SocketAddr = ([127, 0, 0, 1], MOTO_PORT).into();
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(address).await.is_ok() {
                    let answer = http::get(address, "/moto-api/").await;
                    return answer.status == 200;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        assert!(up, "{test}: moto_server did not answer within 30 s");
        Some(moto)
    }

    /// The form bodies of the requests moto received, in order, decoded.
    pub(crate) fn bodies(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|entry| {
                let body = entry["body"].as_str()?.to_owned();
                if entry["body_encoded"].as_bool() != Some(true) {
                    return Some(body);
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .ok()?;
                String::from_utf8(bytes).ok()
            })
            .collect()
    }

    /// The STS `Action`s moto received, in order.
    pub(crate) fn actions(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .filter_map(|body| {
                body.split('&')
                    .find_map(|pair| pair.strip_prefix("Action="))
                    .map(str::to_owned)
            })
            .collect()
    }

    pub(crate) fn count(&self, action: &str) -> usize {
        self.actions().iter().filter(|seen| *seen == action).count()
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
