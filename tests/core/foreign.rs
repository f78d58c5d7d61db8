//! Foreign layers' URL rules (`--layer-url-allow`, `--layer-url-deny`) on what a hostile manifest
//! can write, and the redirects a foreign host answers, against a loopback HTTP server.

use std::sync::Arc;

use regfs::registry::foreign::{Foreign, UrlRules};

fn url_rules(allow: &[&str], deny: &[&str]) -> UrlRules {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    UrlRules::new(&s(allow), &s(deny)).expect("patterns")
}

/// `--layer-url-deny` is checked on the URL that would be fetched, not only on the text the
/// manifest wrote: the WHATWG parser drops tabs and newlines anywhere and resolves `.`/`..`
/// segments, so a URL written for its raw text to slip past a deny pattern is still refused
/// (Go's parser, the seed's, refuses control characters outright).
#[test]
fn a_denied_url_cannot_be_smuggled_past_the_deny_pattern() {
    let rules = url_rules(&["^https?://foo/"], &["^https?://foo/nope"]);
    assert!(rules.check(&["http://foo/nope".into()]).is_err(), "the plain URL is denied");
    for sneaky in ["http://foo/no\tpe", "http://foo/n\nope", "http://foo/x/../nope", "http://foo/./nope"] {
        match rules.check(&[sneaky.to_string()]) {
            Err(_) => {}
            Ok(fetched) => panic!("{sneaky:?} passes the rules and regfs would fetch {}", fetched[0]),
        }
    }
}

/// A foreign URL with a userinfo is refused: the seed's own allow pattern (`^https?://foo`)
/// passes `http://foo@evil.example/`, whose host is evil.example. regfs never sends a userinfo,
/// so refusing it costs nothing and closes the classic bypass.
#[test]
fn an_allow_pattern_naming_a_host_does_not_let_another_host_through_a_userinfo() {
    let rules = url_rules(&["^https?://foo"], &[]);
    if let Ok(fetched) = rules.check(&["http://foo@evil.example/layer".into()]) {
        panic!("allowed, and fetched from host {:?}", fetched[0].host_str());
    }
}

/// One HTTP/1.1 answer per connection from `answer(path)`, on 127.0.0.1; the paths asked.
fn http_server(answer: impl Fn(&str) -> String + Send + 'static) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            seen.lock().expect("lock").push(path.clone());
            let _ = conn.write_all(answer(&path).as_bytes());
        }
    });
    (base, asked)
}

/// The URL rules hold for redirects too: a redirect from an allowed host to a denied URL is not
/// followed (no SSRF to what the operator denied, e.g. an internal network, through an open
/// redirector on an allowed host).
#[test]
fn a_foreign_layer_redirect_to_a_denied_url_is_not_followed() {
    let (denied, denied_asked) =
        http_server(|_| "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsecr".into());
    let target = format!("{denied}/internal/metadata");
    let (allowed, _) = http_server(move |_| {
        format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    });
    let deny = format!("^{}", regex::escape(&denied));
    let rules = url_rules(&[&format!("^{}", regex::escape(&allowed))], &[&deny]);
    let urls = rules.check(&[format!("{allowed}/layer")]).expect("the manifest's URL is allowed");
    let foreign = Foreign::new(rules, &regfs::registry::http::Options::default()).expect("client");
    let got = foreign.get(&urls[0], 0);
    let asked = denied_asked.lock().expect("lock").clone();
    assert!(asked.is_empty() && got.is_err(), "the denied host was asked {asked:?}; result ok: {}", got.is_ok());
}
