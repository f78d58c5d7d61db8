//! A real reference registry (Debian's `docker-registry`, distribution 2.8) on a free loopback
//! port in a temporary directory, with the project's fixtures pushed by `regfs::testkit::fixtures`.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regfs::testkit::fixtures::{self, Opts};

pub struct Registry {
    pub url: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn registry_binary() -> PathBuf {
    for p in ["/usr/bin/docker-registry", "/usr/local/bin/registry", "/usr/bin/registry"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("docker-registry is not installed: run scripts/test, which installs it");
}

impl Registry {
    /// Start a registry; `htpasswd` (a file's contents) turns on Basic auth.
    pub fn start(htpasswd: Option<&str>) -> Registry {
        Registry::start_with(htpasswd, "")
    }

    /// A pull-through cache (distribution's `proxy: remoteurl:`) of the registry at `upstream`,
    /// with storage of its own.
    pub fn start_proxy(upstream: &str) -> Registry {
        Registry::start_with(None, &format!("proxy:\n  remoteurl: {upstream}\n"))
    }

    /// Start a registry with `extra` appended to its configuration (top-level YAML sections).
    pub fn start_with(htpasswd: Option<&str>, extra: &str) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut auth = String::new();
        if let Some(h) = htpasswd {
            std::fs::write(dir.path().join("htpasswd"), h).expect("htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: regfs-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\ncompatibility:\n  schema1:\n    enabled: true\n{auth}{extra}",
            root = dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let url = format!("http://127.0.0.1:{port}");
        let mut reg = Registry { url, port, dir, child: None };
        reg.restart();
        reg
    }

    /// Stop the registry process (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the registry (again) on the same port and storage, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("log");
        let mut cmd = Command::new(registry_binary());
        cmd.arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        super::die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("starting docker-registry"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Serve TLS from now on (same storage, same port), with a certificate for 127.0.0.1 and
    /// localhost signed by a throwaway CA; the CA's PEM file. `url` becomes https.
    pub fn enable_tls(&mut self) -> PathBuf {
        let d = self.dir.path().to_path_buf();
        let d = d.as_path();
        let run = |args: &str| {
            let out =
                Command::new("bash").arg("-c").arg(format!("cd {} && {args}", d.display())).output().expect("openssl");
            assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=regfs test CA' 2>/dev/null",
        );
        run("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' 2>/dev/null");
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        run(
            "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null",
        );
        let config = std::fs::read_to_string(d.join("config.yml")).expect("config");
        let tls = format!(
            "  addr: 127.0.0.1:{}\n  tls:\n    certificate: {}\n    key: {}\n",
            self.port,
            d.join("server.pem").display(),
            d.join("server.key").display()
        );
        std::fs::write(d.join("config.yml"), config.replace(&format!("  addr: 127.0.0.1:{}\n", self.port), &tls))
            .expect("config");
        self.restart();
        self.url = format!("https://127.0.0.1:{}", self.port);
        d.join("ca.pem")
    }

    /// Where the registry stores a blob (manifests are blobs too).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// Whether a blob is stored and linked into some repository (what a registry serves it from;
    /// a pull-through proxy links it once it has stored it whole).
    pub fn blob_linked(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        let repos = self.dir.path().join("data/docker/registry/v2/repositories");
        let out = Command::new("find")
            .arg(&repos)
            .args(["-path", &format!("*/_layers/sha256/{hex}/link")])
            .output()
            .expect("find");
        self.blob_path(digest).exists() && !out.stdout.is_empty()
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("registry.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Access-log lines (`"GET /v2/… HTTP/1.1" 200`) so far.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("] \"").map(|(_, r)| r.split('"').next().unwrap_or("").to_string()))
            .collect()
    }

    /// Push the fixtures (as `user:password` when auth is on); their summary.
    pub fn push_fixtures(&self, basic: Option<(&str, &str)>) -> serde_json::Value {
        let opts = Opts { basic: basic.map(|(u, p)| (u.to_string(), p.to_string())), ..Opts::default() };
        fixtures::push(&self.url, &opts).unwrap_or_else(|e| panic!("pushing the fixtures failed: {e}"))
    }

    /// Overwrite a blob's stored bytes with as many different ones, behind the registry's back.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for b in bytes.iter_mut().skip(100).step_by(997) {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).expect("corrupting");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
