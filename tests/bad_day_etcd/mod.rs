//! Helpers for tests/etcd_bad_day.rs: a private network namespace per test
//! (its own loopback, so etcd's and the fakes' ports never collide with
//! anything else on the machine, and a dummy eth1 for the VIP), real etcd
//! 3.4 members started inside it, fake HTTP servers that answer badly on
//! purpose, an HTTP proxy that can delay, swallow or SIGKILL the hook at a
//! chosen request, and the hook binary run inside the namespace with a
//! bounded wait.
//!
//! The test thread itself enters the namespace (`World::run`): sockets it
//! opens and processes it spawns live there, so nothing here touches the
//! host's network. Addresses: 127.0.0.0/8 inside the namespace and
//! 198.51.100.0/24, 203.0.113.0/24 on its dummy interfaces.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SCOPE: &str = "batman";
pub const VIP: &str = "198.51.100.100";
pub const NODE_IP: &str = "198.51.100.11";
pub const PASSWORD: &str = "S3cr3t-Pa55-for-bad-day-7f3a";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The hook binary cargo built for this test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_patroni-hook"))
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of one test, removed on drop.
pub struct World {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl World {
    /// Runs `body` on a thread inside a fresh namespace (lo up, a veth
    /// eth1 with 198.51.100.11/24), then removes the namespace.
    pub fn run<R: Send>(label: &str, body: impl FnOnce(&World) -> R + Send) -> R {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests need root (network namespaces)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("bd-{}-{n}-{label}", std::process::id());
        let name = name[..name.len().min(40)].to_string();
        run_ok(Command::new("ip").args(["netns", "add", name.as_str()]));
        let w = World {
            name,
            dir: tempfile::Builder::new()
                .prefix("bad-day-")
                .tempdir_in("/dev/shm")
                .unwrap(),
        };
        w.ip(&["link", "set", "lo", "up"]);
        // No dummy driver here: a veth pair inside the namespace.
        w.ip(&[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
        ]);
        w.ip(&["link", "set", "eth1", "up"]);
        w.ip(&["link", "set", "eth1p", "up"]);
        w.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth1"]);
        let file = std::fs::File::open(format!("/run/netns/{}", w.name)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns(2) on a descriptor we hold; only this thread's
                // network namespace changes.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                body(&w)
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(
            Command::new("ip")
                .args(["-n", self.name.as_str()])
                .args(args),
        )
    }

    /// How many times the VIP is on eth1 (of this namespace).
    pub fn vip_count(&self) -> usize {
        self.addr_count("eth1", VIP)
    }

    pub fn addr_count(&self, dev: &str, ip: &str) -> usize {
        let out = self.ip(&["-j", "addr", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["addr_info"]
            .as_array()
            .map(|a| a.iter().filter(|i| i["local"] == ip).count())
            .unwrap_or(0)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a config named `file` for node `name`: dcs etcd3 with the
    /// `etcd3` section's lines `etcd3` (indented by the caller or not:
    /// each line gets two spaces), the VIP on eth1 unless `vip` is false,
    /// and `extra` top-level lines.
    pub fn config(&self, file: &str, name: &str, etcd3: &str, vip: bool, extra: &str) -> PathBuf {
        self.config_d(file, name, etcd3, vip, "3s", extra)
    }

    /// `config` with another deadline.
    pub fn config_d(
        &self,
        file: &str,
        name: &str,
        etcd3: &str,
        vip: bool,
        deadline: &str,
        extra: &str,
    ) -> PathBuf {
        let etcd3: String = etcd3
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("  {}\n", l.trim()))
            .collect();
        let vip = if vip {
            format!("vip:\n  address: {VIP}/24\n  interface: eth1\n  gratuitous_arp: 0\n")
        } else {
            String::new()
        };
        let text = format!(
            "name: {name}\nscope: {SCOPE}\ndeadline: {deadline}\nlock_file: {}\ndcs: etcd3\netcd3:\n{etcd3}{vip}{extra}",
            self.path(&format!("{name}.lock")).display()
        );
        let p = self.path(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes the hook user's password file; returns its path.
    pub fn password_file(&self, password: &str) -> PathBuf {
        let p = self.path("etcd-password");
        std::fs::write(&p, format!("{password}\n")).unwrap();
        p
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.name.as_str()])
            .output();
    }
}

// ---- the hook -------------------------------------------------------------

/// A finished run of the hook.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn text(&self) -> String {
        format!(
            "exit {} after {:?}\nstdout: {}\nstderr: {}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The hook as a started process (in the calling thread's namespace).
pub struct Hook {
    child: Child,
    start: Instant,
    pub pid: i32,
}

pub fn spawn_hook(config: &Path, args: &[&str]) -> Hook {
    spawn_hook_env(config, args, &[])
}

pub fn spawn_hook_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Hook {
    spawn_hook_in(None, config, args, env)
}

/// The hook in namespace `ns` (`ip netns exec`, which execs: the pid is
/// the hook's), or in the calling thread's.
pub fn spawn_hook_in(ns: Option<&str>, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Hook {
    let mut c = match ns {
        None => Command::new(bin()),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin());
            c
        }
    };
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("PATRONI_HOOK_LOG_STDERR", "1")
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let start = Instant::now();
    let child = c.spawn().expect("starting patroni-hook");
    let pid = child.id() as i32;
    Hook { child, start, pid }
}

impl Hook {
    /// Waits at most `limit` (then kills it and panics).
    pub fn wait(mut self, limit: Duration) -> Run {
        let mut out = self.child.stdout.take().unwrap();
        let mut err = self.child.stderr.take().unwrap();
        let o = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let e = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if self.start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("patroni-hook still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = self.start.elapsed();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&e.join().unwrap()).into_owned(),
            took,
        }
    }
}

/// Runs the hook to its end (at most 15 s).
pub fn hook(config: &Path, args: &[&str]) -> Run {
    spawn_hook(config, args).wait(Duration::from_secs(15))
}

// ---- a tiny HTTP client (tests' own view of etcd) -------------------------

/// One HTTP/1.0 request; returns the status and the body.
pub fn http(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&all[..split]);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, all[split + 4..].to_vec())
}

pub fn b64(s: &str) -> String {
    B64.encode(s)
}

// ---- real etcd --------------------------------------------------------------

pub struct Member {
    pub name: String,
    pub client: String,
    pub peer: String,
    args: Vec<String>,
    child: Option<Child>,
}

/// etcd 3.4 members inside the calling thread's namespace.
pub struct Etcd {
    pub members: Vec<Member>,
    data: tempfile::TempDir,
    /// Auth on: root's password.
    auth: bool,
}

pub struct EtcdOpts {
    pub members: usize,
    /// Users, roles (the kit's patroni-hook-db for SCOPE) and auth on.
    pub auth: bool,
    /// --auth-token-ttl (seconds).
    pub token_ttl: Option<u32>,
}

impl Etcd {
    pub fn start(o: EtcdOpts) -> Etcd {
        let data = tempfile::Builder::new()
            .prefix("bad-day-etcd-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let n = o.members;
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{}", 12379 + 2 * i),
                peer: format!("127.0.0.1:{}", 12380 + 2 * i),
                args: Vec::new(),
                child: None,
            })
            .collect();
        let cluster: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        let cluster = cluster.join(",");
        for m in members.iter_mut() {
            m.args = vec![
                format!("--name={}", m.name),
                format!("--data-dir={}", data.path().join(&m.name).display()),
                format!("--listen-client-urls=http://{}", m.client),
                format!("--advertise-client-urls=http://{}", m.client),
                format!("--listen-peer-urls=http://{}", m.peer),
                format!("--initial-advertise-peer-urls=http://{}", m.peer),
                format!("--initial-cluster={cluster}"),
                "--initial-cluster-state=new".into(),
                "--heartbeat-interval=50".into(),
                "--election-timeout=300".into(),
                "--logger=zap".into(),
                "--log-level=error".into(),
                "--log-outputs=stderr".into(),
            ];
            if let Some(ttl) = o.token_ttl {
                m.args.push(format!("--auth-token-ttl={ttl}"));
            }
        }
        let mut e = Etcd {
            members,
            data,
            auth: false,
        };
        for i in 0..n {
            e.spawn(i);
        }
        for i in 0..n {
            e.wait_healthy(i);
        }
        if o.auth {
            e.etcdctl(&["user", "add", "root:rootpw"]);
            e.etcdctl(&["user", "add", &format!("patroni-hook-db:{PASSWORD}")]);
            e.etcdctl(&["role", "add", "patroni-hook-db"]);
            let p = format!("/service/{SCOPE}/");
            e.etcdctl(&[
                "role",
                "grant-permission",
                "patroni-hook-db",
                "--prefix=true",
                "read",
                &p,
            ]);
            for k in ["vip-holder", "pause-request"] {
                e.etcdctl(&[
                    "role",
                    "grant-permission",
                    "patroni-hook-db",
                    "readwrite",
                    &format!("{p}{k}"),
                ]);
            }
            e.etcdctl(&["user", "grant-role", "patroni-hook-db", "patroni-hook-db"]);
            e.etcdctl(&["auth", "enable"]);
            e.auth = true;
        }
        e
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new("/usr/bin/etcd")
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        m.child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let addr = &self.members[i].client;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ =
                    s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes());
                let mut b = String::new();
                let _ = s.read_to_string(&mut b);
                if b.contains("\"health\":\"true\"") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd member {i} not healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `hosts:` for every member, in order.
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn etcdctl(&self, args: &[&str]) -> String {
        let mut c = Command::new("/usr/bin/etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.members[0].client))
            .arg("--command-timeout=5s");
        if self.auth {
            c.arg("--user=root:rootpw");
        }
        run_ok(c.args(args))
    }

    fn root_headers(&self) -> Vec<(String, String)> {
        if !self.auth {
            return Vec::new();
        }
        let (s, b) = http(
            &self.live_client(),
            "/v3/auth/authenticate",
            &[],
            r#"{"name":"root","password":"rootpw"}"#,
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        vec![(
            "Authorization".into(),
            v["token"].as_str().unwrap().to_string(),
        )]
    }

    /// A member that runs (not stopped by a test).
    fn live_client(&self) -> String {
        self.members
            .iter()
            .find(|m| m.child.is_some() && !stopped(m))
            .expect("a running member")
            .client
            .clone()
    }

    fn kv(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let h = self.root_headers();
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // A cluster just woken (SIGCONT) may time a request out: again.
        let t0 = Instant::now();
        let (s, b) = loop {
            let (s, b) = http(&self.live_client(), path, &h, &body.to_string());
            if s != 503 || t0.elapsed() > Duration::from_secs(10) {
                break (s, b);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).unwrap()
    }

    pub fn put(&self, key: &str, value: &str) {
        self.kv(
            "/v3/kv/put",
            serde_json::json!({"key": b64(key), "value": b64(value)}),
        );
    }

    pub fn delete(&self, key: &str) {
        self.kv("/v3/kv/deleterange", serde_json::json!({"key": b64(key)}));
    }

    /// The value and mod_revision of `key`.
    pub fn get(&self, key: &str) -> Option<(String, u64)> {
        let v = self.kv("/v3/kv/range", serde_json::json!({"key": b64(key)}));
        let kv = v["kvs"].as_array()?.first()?.clone();
        let value = B64.decode(kv["value"].as_str().unwrap_or("")).unwrap();
        Some((
            String::from_utf8(value).unwrap(),
            kv["mod_revision"].as_str().unwrap().parse().unwrap(),
        ))
    }

    /// The store's revision.
    pub fn revision(&self) -> u64 {
        let v = self.kv("/v3/kv/range", serde_json::json!({"key": b64("x")}));
        v["header"]["revision"].as_str().unwrap().parse().unwrap()
    }

    pub fn compact(&self, rev: u64) {
        self.kv(
            "/v3/kv/compaction",
            serde_json::json!({"revision": rev.to_string(), "physical": true}),
        );
    }

    /// `/service/batman/<k>`.
    pub fn key(k: &str) -> String {
        format!("/service/{SCOPE}/{k}")
    }

    pub fn set_leader(&self, who: &str) {
        self.put(&Etcd::key("leader"), who);
    }

    /// The vip-holder record's member, if any.
    pub fn holder(&self) -> Option<String> {
        self.get(&Etcd::key("vip-holder")).map(|(v, _)| {
            let j: serde_json::Value = serde_json::from_str(&v).expect("vip-holder is JSON");
            j["member"].as_str().unwrap().to_string()
        })
    }

    pub fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        let pid = self.members[i].child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// SIGKILL and start member `i` again (tokens it issued die with it).
    pub fn restart(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Start again on the same data dir: no longer a new cluster.
        for a in self.members[i].args.iter_mut() {
            if a == "--initial-cluster-state=new" {
                *a = "--initial-cluster-state=existing".into();
            }
        }
        self.spawn(i);
        self.wait_healthy(i);
    }
}

fn stopped(m: &Member) -> bool {
    let Some(c) = &m.child else { return true };
    std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
        .unwrap_or(true)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

// ---- fake servers and the proxy -------------------------------------------

/// One request as a server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub path: String,
    pub head: String,
    pub body: String,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Reads one HTTP/1.1 request (headers, Content-Length body); None at EOF.
pub fn read_req(r: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let path = head.split(' ').nth(1)?.to_string();
    let req = Req {
        path,
        head,
        body: String::new(),
    };
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        body: String::from_utf8_lossy(&body).into_owned(),
        ..req
    })
}

/// How a fake answers one request.
pub enum Reply {
    /// Status and JSON body; the connection closes after.
    Json(u16, String),
    /// These bytes as they are, then close.
    Raw(Vec<u8>),
    /// Keep the connection open, say nothing (for `Duration`).
    Hang(Duration),
    /// 200 with a chunked body that never ends: `chunk` every `every`.
    Endless { chunk: Vec<u8>, every: Duration },
}

pub fn json_reply(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Requests a fake or proxy saw, and connections it accepted.
#[derive(Clone, Default)]
pub struct Seen {
    pub reqs: Arc<Mutex<Vec<Req>>>,
    pub conns: Arc<AtomicUsize>,
}

impl Seen {
    pub fn reqs(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
    pub fn paths(&self) -> Vec<String> {
        self.reqs().into_iter().map(|r| r.path).collect()
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// A fake etcd on `addr` answering with `answer(n, req)` (n from 0).
pub fn fake<F>(addr: &str, answer: F) -> Seen
where
    F: Fn(usize, &Req) -> Reply + Send + Sync + 'static,
{
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let seen = Seen::default();
    let s2 = seen.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            s2.conns.fetch_add(1, Ordering::SeqCst);
            let s3 = s2.clone();
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                let Some(req) = read_req(&mut r) else { return };
                let n = {
                    let mut v = s3.reqs.lock().unwrap();
                    v.push(req.clone());
                    v.len() - 1
                };
                match answer(n, &req) {
                    Reply::Json(st, b) => {
                        let _ = w.write_all(&json_reply(st, &b));
                    }
                    Reply::Raw(b) => {
                        let _ = w.write_all(&b);
                    }
                    Reply::Hang(d) => std::thread::sleep(d),
                    Reply::Endless { chunk, every } => {
                        let _ = w.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                        );
                        let t0 = Instant::now();
                        while t0.elapsed() < Duration::from_secs(20) {
                            let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                            c.extend_from_slice(&chunk);
                            c.extend_from_slice(b"\r\n");
                            if w.write_all(&c).is_err() {
                                break;
                            }
                            if !every.is_zero() {
                                std::thread::sleep(every);
                            }
                        }
                    }
                }
                let _ = w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    seen
}

/// A listener that accepts no connection and never answers (the kernel
/// completes handshakes into its backlog): a black hole that connects.
pub fn black_hole(addr: &str) -> TcpListener {
    TcpListener::bind(addr).unwrap()
}

/// What the proxy does with request `n`.
pub enum Act {
    Forward,
    /// Wait, then forward.
    Delay(Duration),
    /// SIGKILL the hook without forwarding (the request never lands).
    KillBefore,
    /// Forward, wait for etcd's answer, SIGKILL the hook before it sees it.
    KillAfter,
    /// Forward and drop etcd's answer: keep the connection silent.
    Swallow,
}

/// An HTTP proxy on `listen` in front of `upstream`, deciding per request;
/// `victim` is the pid to SIGKILL (0: none yet).
pub fn proxy<F>(listen: &str, upstream: &str, victim: Arc<AtomicI32>, act: F) -> Seen
where
    F: Fn(usize, &Req) -> Act + Send + Sync + 'static,
{
    let l = TcpListener::bind(listen).unwrap_or_else(|e| panic!("bind {listen}: {e}"));
    let seen = Seen::default();
    let s2 = seen.clone();
    let act = Arc::new(act);
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            s2.conns.fetch_add(1, Ordering::SeqCst);
            let (s3, act, up, victim) = (s2.clone(), act.clone(), upstream.clone(), victim.clone());
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                // One request per connection: every answer closes it.
                if let Some(req) = read_req(&mut r) {
                    let n = {
                        let mut v = s3.reqs.lock().unwrap();
                        v.push(req.clone());
                        v.len() - 1
                    };
                    let kill = || {
                        let t0 = Instant::now();
                        while victim.load(Ordering::SeqCst) <= 0
                            && t0.elapsed() < Duration::from_secs(2)
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        let pid = victim.load(Ordering::SeqCst);
                        assert!(pid > 0, "no hook pid to kill");
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    };
                    let a = act(n, &req);
                    if let Act::KillBefore = a {
                        kill();
                        return;
                    }
                    if let Act::Delay(d) = a {
                        std::thread::sleep(d);
                    }
                    let answer = forward(&up, &req);
                    match a {
                        Act::KillAfter => {
                            kill();
                            return;
                        }
                        Act::Swallow => {
                            std::thread::sleep(Duration::from_secs(10));
                            return;
                        }
                        _ => {}
                    }
                    if w.write_all(&answer).is_err() {
                        return;
                    }
                    // Answers carry Connection: close; the client reconnects.
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
            });
        }
    });
    seen
}

/// Sends `req` to `upstream` as HTTP/1.0 and returns the whole answer
/// (headers rewritten to close the connection).
fn forward(upstream: &str, req: &Req) -> Vec<u8> {
    let mut s = TcpStream::connect(upstream).unwrap();
    let mut head = String::new();
    let mut lines = req.head.lines();
    let first = lines.next().unwrap().replace("HTTP/1.1", "HTTP/1.0");
    head.push_str(&first);
    head.push_str("\r\n");
    for l in lines {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        head.push_str(l.trim_end());
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(req.body.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    // HTTP/1.0 answer to an HTTP/1.1 client: close-delimited, fine.
    all
}

/// A second namespace `label` joined to the world: veth `<label>a`
/// 203.0.113.1/30 in the world, eth0 203.0.113.2/30 in it, and its own
/// eth1 (a veth pair inside it) with `node_ip`/24. Removed on drop.
pub struct Node2 {
    pub name: String,
}

impl Node2 {
    pub fn new(w: &World, label: &str, node_ip: &str) -> Node2 {
        let name = format!("{}-{label}", w.name);
        run_ok(Command::new("ip").args(["netns", "add", name.as_str()]));
        let n = Node2 { name };
        let ip =
            |args: &[&str]| run_ok(Command::new("ip").args(["-n", n.name.as_str()]).args(args));
        ip(&["link", "set", "lo", "up"]);
        w.ip(&[
            "link",
            "add",
            "n2a",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            n.name.as_str(),
        ]);
        w.ip(&["addr", "add", "203.0.113.1/30", "dev", "n2a"]);
        w.ip(&["link", "set", "n2a", "up"]);
        ip(&["addr", "add", "203.0.113.2/30", "dev", "eth0"]);
        ip(&["link", "set", "eth0", "up"]);
        ip(&[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
        ]);
        ip(&["link", "set", "eth1", "up"]);
        ip(&["link", "set", "eth1p", "up"]);
        ip(&["addr", "add", &format!("{node_ip}/24"), "dev", "eth1"]);
        n
    }

    pub fn vip_count(&self) -> usize {
        let out = run_ok(Command::new("ip").args([
            "-n",
            self.name.as_str(),
            "-j",
            "addr",
            "show",
            "dev",
            "eth1",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["addr_info"]
            .as_array()
            .map(|a| a.iter().filter(|i| i["local"] == VIP).count())
            .unwrap_or(0)
    }
}

impl Drop for Node2 {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.name.as_str()])
            .output();
    }
}

/// Whether `hay` holds `needle` (for secrets: also base64 and JSON-escaped).
pub fn leaks(hay: &str, secret: &str) -> bool {
    hay.contains(secret) || hay.contains(&b64(secret))
}
