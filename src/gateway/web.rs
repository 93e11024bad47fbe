//! The web chat client, served by every node at `GET /`.
//!
//! Its files live in `web/` and are embedded in the binary at build time
//! (no build step at run time). `ASSETS` maps each URL path to its bytes
//! and content type; the module map is in docs/web-client.md. The page's
//! Content-Security-Policy and `/web-config.json` are built from
//! `--web-servers`, the only servers besides its own node the page may
//! connect to (a crafted `?server=` must not get the user's token).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The content type of every JavaScript module.
const JS: &str = "text/javascript; charset=utf-8";

/// (URL path, content type, bytes) of every embedded file. The page is
/// native ES modules: `app.js` (the entry `index.html` loads) imports
/// `app/*.js`, which import `huddle-client.js`, which imports
/// `client/*.js`. Every module imported must be listed here (a unit test
/// below checks it).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    ("/app.js", JS, include_bytes!("../../web/app.js")),
    ("/app/dom.js", JS, include_bytes!("../../web/app/dom.js")),
    (
        "/app/rooms.js",
        JS,
        include_bytes!("../../web/app/rooms.js"),
    ),
    (
        "/app/render.js",
        JS,
        include_bytes!("../../web/app/render.js"),
    ),
    (
        "/app/actions.js",
        JS,
        include_bytes!("../../web/app/actions.js"),
    ),
    (
        "/app/events.js",
        JS,
        include_bytes!("../../web/app/events.js"),
    ),
    (
        "/app/session.js",
        JS,
        include_bytes!("../../web/app/session.js"),
    ),
    (
        "/app/moderation.js",
        JS,
        include_bytes!("../../web/app/moderation.js"),
    ),
    (
        "/app/reads.js",
        JS,
        include_bytes!("../../web/app/reads.js"),
    ),
    (
        "/huddle-client.js",
        JS,
        include_bytes!("../../web/huddle-client.js"),
    ),
    (
        "/client/transport.js",
        JS,
        include_bytes!("../../web/client/transport.js"),
    ),
    (
        "/client/rpc.js",
        JS,
        include_bytes!("../../web/client/rpc.js"),
    ),
    (
        "/client/tracker.js",
        JS,
        include_bytes!("../../web/client/tracker.js"),
    ),
    (
        "/client/reconnect.js",
        JS,
        include_bytes!("../../web/client/reconnect.js"),
    ),
    (
        "/client/servers.js",
        JS,
        include_bytes!("../../web/client/servers.js"),
    ),
    (
        "/client/verbs.js",
        JS,
        include_bytes!("../../web/client/verbs.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/favicon.svg"),
    ),
];

/// Where the page reads the WebSocket servers it may use besides its own
/// node's `/ws` (`--web-servers`): `{"servers": ["wss://…/ws", …]}`. The
/// page fetches it only when its URL has `?server=`.
const WEB_CONFIG_PATH: &str = "/web-config.json";

/// The page's Content-Security-Policy for a node whose `--web-servers` are
/// `servers`: its own scripts and styles only (no inline code, so injected
/// markup cannot run); sockets and fetches to its own host (`'self'` covers
/// `ws(s)://` of the same host) and to exactly the listed servers, so even a
/// fooled script cannot hand a token to any other; images from anywhere
/// over http(s) because image messages link to them. The servers were
/// checked at start-up (`Config::validate`): plain URLs with no character
/// that could end a source expression.
fn csp(servers: &[String]) -> String {
    let mut connect = String::from("'self'");
    for server in servers {
        connect.push(' ');
        connect.push_str(server);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; \
         img-src 'self' http: https: data:; connect-src {connect}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The body of [`WEB_CONFIG_PATH`]: the allow-list as JSON.
fn web_config(servers: &[String]) -> Bytes {
    #[derive(serde::Serialize)]
    struct WebConfig<'a> {
        /// `--web-servers`, as configured: the page compares each with its
        /// `?server=` after normalising both with `new URL()`.
        servers: &'a [String],
    }
    let body =
        serde_json::to_vec(&WebConfig { servers }).expect("a list of strings always serializes");
    Bytes::from(body)
}

/// The embedded file at `path` (`/` is `/index.html`), or the page's
/// configuration at [`WEB_CONFIG_PATH`], for a node whose `--web-servers`
/// are `servers`; `None` for any other path.
pub(crate) fn asset(path: &str, servers: &[String]) -> Option<Response<Full<Bytes>>> {
    let path = if path == "/" { "/index.html" } else { path };
    let (content_type, body) = if path == WEB_CONFIG_PATH {
        ("application/json", web_config(servers))
    } else {
        let (_, content_type, bytes) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
        (*content_type, Bytes::from_static(bytes))
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type.starts_with("text/html") {
        // Validated servers are visible ASCII; should one not be, the page
        // gets the strictest policy (it will not run) rather than none.
        let policy = HeaderValue::from_str(&csp(servers))
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
        h.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, JS, WEB_CONFIG_PATH, asset, csp};
    use bytes::Bytes;
    use http::Response;
    use http_body_util::Full;

    /// The URL path an import specifier in the module at `base` names, or
    /// `None` when a browser could not fetch it from this server (a bare
    /// name such as `lodash` needs an import map; `..` above the root).
    fn resolve(base: &str, spec: &str) -> Option<String> {
        if spec.starts_with('/') {
            return Some(spec.to_owned());
        }
        if !spec.starts_with("./") && !spec.starts_with("../") {
            return None;
        }
        let mut parts: Vec<&str> = base.split('/').collect();
        parts.pop(); // the importing file's own name
        for segment in spec.split('/') {
            match segment {
                "." => {}
                ".." => {
                    if parts.len() <= 1 {
                        return None;
                    }
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        Some(parts.join("/"))
    }

    /// The specifiers of a module's static `import … from '…'`,
    /// `import '…'` and `export … from '…'` statements (one statement may
    /// span lines: its `} from '…'` line is found). Comments are skipped.
    fn imports(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in source.lines().map(str::trim_start) {
            let statement = line.starts_with("import ")
                || line.starts_with("import{")
                || line.starts_with("export ")
                || line.starts_with("} from ");
            if !statement {
                continue;
            }
            let rest = match line.rfind(" from ") {
                Some(at) => &line[at + " from ".len()..],
                None if line.starts_with("import ") => &line["import ".len()..],
                None => continue,
            };
            let rest = rest.trim_start();
            let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                continue;
            };
            if let Some(end) = rest[1..].find(quote) {
                found.push(rest[1..1 + end].to_owned());
            }
        }
        found
    }

    #[test]
    fn resolve_follows_relative_paths() {
        assert_eq!(
            resolve("/app/render.js", "./dom.js").as_deref(),
            Some("/app/dom.js")
        );
        assert_eq!(
            resolve("/app/session.js", "../huddle-client.js").as_deref(),
            Some("/huddle-client.js")
        );
        assert_eq!(
            resolve("/app.js", "./app/dom.js").as_deref(),
            Some("/app/dom.js")
        );
        assert_eq!(resolve("/app.js", "/x.js").as_deref(), Some("/x.js"));
        assert_eq!(resolve("/app.js", "../x.js"), None);
        assert_eq!(resolve("/app.js", "lodash"), None);
    }

    #[test]
    fn imports_finds_single_and_multi_line_statements() {
        let source = "// import { no } from './comment.js';\n\
            import { a } from './a.js';\n\
            import {\n  b, c,\n} from \"../b.js\";\n\
            import './side.js';\n\
            export { d } from '/d.js';\n\
            const e = 'import';\n";
        assert_eq!(imports(source), ["./a.js", "../b.js", "./side.js", "/d.js"]);
    }

    /// A module the browser cannot fetch breaks the whole page; this makes
    /// a forgotten `ASSETS` entry fail `cargo test`, not just the browser.
    #[test]
    fn every_import_of_every_module_is_served() {
        let mut checked = 0;
        for (path, content_type, bytes) in ASSETS.iter().filter(|(_, t, _)| *t == JS) {
            let source = std::str::from_utf8(bytes).expect("the web client's modules are UTF-8");
            for spec in imports(source) {
                let target = resolve(path, &spec).unwrap_or_else(|| {
                    panic!("{path} imports {spec:?}, which the browser cannot fetch")
                });
                let served = ASSETS.iter().find(|(p, _, _)| *p == target);
                assert!(
                    served.is_some_and(|(_, t, _)| *t == *content_type),
                    "{path} imports {spec:?}: {target} is not served as JavaScript"
                );
                checked += 1;
            }
        }
        // app.js, its six modules, huddle-client.js and its three: at
        // least one import per module that has a parent.
        assert!(
            checked >= 10,
            "only {checked} imports found: is the scan broken?"
        );
    }

    #[test]
    fn every_js_file_is_served_as_javascript_and_the_page_loads_app_js() {
        for (path, content_type, _) in ASSETS {
            if path.ends_with(".js") {
                assert_eq!(*content_type, JS, "{path}");
            }
        }
        let page = asset("/", &[]).expect("the page is served");
        let csp = page
            .headers()
            .get(http::header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .expect("the page has a CSP");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        let index = ASSETS
            .iter()
            .find(|(p, _, _)| *p == "/index.html")
            .map(|(_, _, b)| String::from_utf8_lossy(b))
            .expect("index.html is embedded");
        assert!(index.contains(r#"<script type="module" src="/app.js"></script>"#));
    }

    fn csp_of(servers: &[String]) -> String {
        let page = asset("/index.html", servers).expect("the page is served");
        page.headers()
            .get(http::header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .expect("the page has a CSP")
            .to_owned()
    }

    /// Without `--web-servers` the page may open sockets to its own host
    /// only: no blanket `ws:`/`wss:` lets a crafted `?server=` reach another.
    #[test]
    fn the_csp_allows_only_the_own_host_without_web_servers() {
        let policy = csp_of(&[]);
        assert!(policy.contains("; connect-src 'self'; "), "{policy}");
        assert!(!policy.contains("ws:"), "{policy}");
        assert!(!policy.contains("wss:"), "{policy}");
        assert_eq!(
            policy,
            "default-src 'none'; script-src 'self'; style-src 'self'; \
             img-src 'self' http: https: data:; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert_eq!(csp(&[]), policy);
    }

    #[test]
    fn the_csp_lists_exactly_the_web_servers() {
        let servers = [
            "ws://127.0.0.1:9000/ws".to_owned(),
            "wss://chat.example.com/ws".to_owned(),
        ];
        let policy = csp_of(&servers);
        assert!(
            policy.contains(
                "; connect-src 'self' ws://127.0.0.1:9000/ws wss://chat.example.com/ws; "
            ),
            "{policy}"
        );
        let connect: Vec<&str> = policy
            .split(';')
            .map(str::trim)
            .filter(|d| d.starts_with("connect-src"))
            .collect();
        assert_eq!(connect.len(), 1, "one connect-src: {policy}");
        assert!(!connect[0].contains(" ws: ") && !connect[0].ends_with(" wss:"));
        for directive in [
            "script-src 'self'",
            "default-src 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{directive} kept: {policy}");
        }
        let script = asset("/app.js", &servers).expect("served");
        assert!(
            script
                .headers()
                .get(http::header::CONTENT_SECURITY_POLICY)
                .is_none(),
            "only the page carries the policy"
        );
    }

    #[tokio::test]
    async fn the_page_reads_the_web_servers_as_json() {
        use http_body_util::BodyExt;
        async fn body(res: Response<Full<Bytes>>) -> String {
            let Ok(collected) = res.into_body().collect().await;
            String::from_utf8_lossy(&collected.to_bytes()).into_owned()
        }
        let servers = ["wss://chat.example.com/ws".to_owned()];
        let res = asset(WEB_CONFIG_PATH, &servers).expect("served");
        assert_eq!(
            res.headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert_eq!(
            body(res).await,
            r#"{"servers":["wss://chat.example.com/ws"]}"#
        );
        let empty = asset(WEB_CONFIG_PATH, &[]).expect("served");
        assert_eq!(body(empty).await, r#"{"servers":[]}"#);
        assert!(asset("/nope.json", &servers).is_none());
    }
}
