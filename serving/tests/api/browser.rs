//! A real browser for the tests of pages: headless Chromium driven through ChromeDriver
//! (W3C WebDriver over HTTP), both Debian's, installed by scripts/setup.sh.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// Chromium's flags for a machine without a display or an outside network.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The page at `url` as Chromium has it once its scripts have run (`--dump-dom`),
/// without a driver.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let output = Command::new("chromium")
        .args(FLAGS)
        // Until the page's scripts have fetched and rendered what they load.
        .args(["--virtual-time-budget=15000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs: scripts/setup.sh installs it (Debian's chromium)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless session.
    pub fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs: scripts/setup.sh installs it (Debian's chromium-driver)");
        let profile = tempfile::tempdir().expect("tempdir");
        let mut browser = Browser {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(&browser.addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::yield_now();
        }
        let mut args: Vec<String> = FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let session = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
                // What the page writes to its console, for `console_errors`.
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}),
        );
        browser.session = session["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }));
    }

    /// The element `css` selects, once the page has it.
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, answer) = self.try_call(
                "POST",
                &format!("/session/{}/element", self.session),
                json!({"using": "css selector", "value": css}),
            );
            if status == 200 {
                let element = answer["value"][ELEMENT].as_str();
                return element
                    .unwrap_or_else(|| panic!("an element: {answer}"))
                    .to_string();
            }
            assert!(Instant::now() < deadline, "no {css} on the page: {answer}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.session_call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// Replaces what the input or text area `css` holds with `text`.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.session_call("POST", &format!("/element/{element}/clear"), json!({}));
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    /// The text of `css` once `done` holds for it.
    pub fn text_when(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let element = self.find(css);
            // A page that redraws may replace the element between finding and reading
            // it (a stale element): then it is looked for again.
            let (status, answer) = self.try_call(
                "GET",
                &format!("/session/{}/element/{element}/text", self.session),
                Value::Null,
            );
            let text = answer["value"].as_str().unwrap_or_default().to_string();
            if status == 200 && done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} still shows {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The errors the page's console has shown since the last call (ChromeDriver's
    /// browser log, `SEVERE` entries: uncaught exceptions, failed loads, CSP refusals).
    pub fn console_errors(&self) -> Vec<String> {
        let entries = self.session_call("POST", "/se/log", json!({"type": "browser"}));
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|entry| entry["level"] == "SEVERE")
                    .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resizes the window (CSS pixels), as a laptop's or a phone's.
    pub fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    /// The page as it looks now, as PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let png = self.session_call("GET", "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 PNG"))
            .expect("base64")
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)["value"].take()
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.try_call(method, path, body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer
    }

    fn try_call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).expect("chromedriver answers");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("a request");
        // Read to the end of the body its length gives: ChromeDriver may keep the
        // connection open.
        let mut response = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head, body) = loop {
            let read = stream.read(&mut chunk).expect("an answer");
            assert!(read > 0, "chromedriver closed before answering");
            response.extend_from_slice(&chunk[..read]);
            let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&response[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while response.len() < end + 4 + length {
                let read = stream.read(&mut chunk).expect("an answer");
                assert!(read > 0, "chromedriver closed mid-answer");
                response.extend_from_slice(&chunk[..read]);
            }
            break (
                head,
                String::from_utf8_lossy(&response[end + 4..end + 4 + length]).to_string(),
            );
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status");
        let body = body.as_str();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), Value::Null);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
