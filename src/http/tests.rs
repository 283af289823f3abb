//! The seam, driven over an in-memory connection with stand-in services: who answers, what they
//! are given, and what `http` does around them.

use super::*;
use http::header::HeaderValue;
use http::request::Parts;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A service that claims the paths under `prefix` and answers with its name, the path, the time
/// it was given and the body it saw (when it takes one).
struct Named {
    name: &'static str,
    prefix: &'static str,
    takes_body: bool,
    seen: Mutex<Vec<OffsetDateTime>>,
}

impl Named {
    fn new(name: &'static str, prefix: &'static str) -> Named {
        Named {
            name,
            prefix,
            takes_body: false,
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl MetadataService for Named {
    fn name(&self) -> &'static str {
        self.name
    }

    fn claims(&self, request: &Parts) -> bool {
        request.uri.path().starts_with(self.prefix)
    }

    fn takes_body(&self, _request: &Parts) -> bool {
        self.takes_body
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            self.seen.lock().expect("not poisoned").push(context.now);
            let body = match context.body {
                Some(body) => {
                    let bytes = body.collect().await.expect("a body").to_bytes();
                    format!(" body={}", String::from_utf8_lossy(&bytes))
                }
                None => String::new(),
            };
            let text = format!("{} {}{body}", self.name, context.request.uri.path());
            Reply::new(StatusCode::OK)
                .header(http::header::SERVER, HeaderValue::from_static("stand-in"))
                .body("text/plain", text)
        })
    }
}

/// The refusals' page in these tests: the status and nothing else.
fn refusal(status: StatusCode) -> Reply {
    Reply::new(status).body("text/plain", format!("refused {}", status.as_u16()))
}

const FIXED: OffsetDateTime = time::macros::datetime!(2030-01-02 03:04:05 UTC);

/// Sends `request` (raw bytes) to `server` and reads the whole response.
async fn exchange(server: &Server, request: &[u8]) -> String {
    let (mut client, connection) = tokio::io::duplex(256 * 1024);
    server.serve(connection, "127.0.0.1:40000".parse().expect("address"));
    client.write_all(request).await.expect("written");
    let mut response = Vec::new();
    client.read_to_end(&mut response).await.expect("read");
    String::from_utf8(response).expect("text")
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// The body of a response (what follows the blank line).
fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn the_first_service_that_claims_a_request_answers_it_in_registration_order() {
    let services = Services::new(refusal)
        .with(Named::new("narrow", "/special/"))
        .with(Named::new("catch-all", "/"))
        .with(Named::new("never", "/special/"));
    let server = Server::new(services);
    assert_eq!(
        body(&exchange(&server, &get("/special/x")).await),
        "narrow /special/x"
    );
    assert_eq!(
        body(&exchange(&server, &get("/other")).await),
        "catch-all /other"
    );
}

#[tokio::test]
async fn a_request_nothing_claims_gets_the_refusal_page_404() {
    let server = Server::new(Services::new(refusal).with(Named::new("narrow", "/special/")));
    let response = exchange(&server, &get("/elsewhere")).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert_eq!(body(&response), "refused 404");
}

#[tokio::test]
async fn http_refuses_on_the_services_page_before_any_service_runs() {
    let services = Services::new(refusal).with(Named::new("catch-all", "/"));
    let limits = Limits {
        max_path_length: 16,
        ..Limits::default()
    };
    let server = Server::with_limits(services, limits);
    let too_long = exchange(&server, &get("/a-path-longer-than-sixteen")).await;
    assert!(too_long.starts_with("HTTP/1.1 414"), "{too_long}");
    assert_eq!(body(&too_long), "refused 414");
    let misaddressed = exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(misaddressed.starts_with("HTTP/1.1 403"), "{misaddressed}");
    assert_eq!(body(&misaddressed), "refused 403");
}

#[tokio::test]
async fn the_service_answers_at_the_time_the_servers_clock_gives() {
    let service = Arc::new(Named::new("catch-all", "/"));
    let server = Server::new(Services::new(refusal).with(service.clone())).with_clock(|| FIXED);
    exchange(&server, &get("/")).await;
    assert_eq!(*service.seen.lock().expect("not poisoned"), [FIXED]);
}

#[tokio::test]
async fn a_body_is_dropped_for_local_services_and_handed_to_one_that_takes_it() {
    let forwarder = Named {
        takes_body: true,
        ..Named::new("forwarder", "/forwarded")
    };
    let services = Services::new(refusal)
        .with(forwarder)
        .with(Named::new("local", "/"));
    let server = Server::new(services);
    let put = |path: &str| {
        format!(
            "PUT {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 5\r\n\
             Connection: close\r\n\r\nhello"
        )
        .into_bytes()
    };
    assert_eq!(
        body(&exchange(&server, &put("/forwarded")).await),
        "forwarder /forwarded body=hello"
    );
    assert_eq!(
        body(&exchange(&server, &put("/local")).await),
        "local /local"
    );
    let huge = format!(
        "PUT /local HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        MAX_BODY + 1,
        "x".repeat(MAX_BODY + 1)
    );
    let refused = exchange(&server, huge.as_bytes()).await;
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    assert!(refused.contains("content-length: 0\r\n"), "bare: {refused}");
}

#[tokio::test]
async fn a_head_gets_the_headers_the_service_wrote_in_its_order_and_no_body() {
    let server = Server::new(Services::new(refusal).with(Named::new("catch-all", "/")));
    let response = exchange(
        &server,
        b"HEAD /x HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head: Vec<&str> = response.lines().skip(1).take(3).collect();
    assert_eq!(
        head,
        [
            "server: stand-in",
            "content-type: text/plain",
            "content-length: 12"
        ]
    );
    assert_eq!(body(&response), "");
}

/// A service whose answer depends on the caller for the paths under `/mine/`, and says whom it
/// was given.
struct PerCaller;

impl MetadataService for PerCaller {
    fn name(&self) -> &'static str {
        "per-caller"
    }

    fn claims(&self, _request: &Parts) -> bool {
        true
    }

    fn depends_on_caller(&self, request: &Parts) -> bool {
        request.uri.path().starts_with("/mine/")
    }

    fn answer<'a>(&'a self, context: Context<'a>) -> Answering<'a> {
        Box::pin(async move {
            let caller = context
                .caller
                .map_or("nobody".to_owned(), |caller| caller.to_string());
            Reply::new(StatusCode::OK).body("text/plain", caller)
        })
    }
}

#[tokio::test]
async fn the_caller_is_identified_only_for_an_answer_that_depends_on_it() {
    let server = Server::new(Services::new(refusal).with(PerCaller))
        .with_attribution(Attribution::open(Vec::new(), Vec::new()));
    assert_eq!(
        body(&exchange(&server, &get("/mine/role")).await),
        "127.0.0.1"
    );
    assert_eq!(body(&exchange(&server, &get("/anyone")).await), "nobody");
    let anonymous = Server::new(Services::new(refusal).with(PerCaller));
    assert_eq!(
        body(&exchange(&anonymous, &get("/mine/role")).await),
        "nobody",
        "a server without attribution cannot tell"
    );
}

/// What an observer keeps: each request as `observe::Served` told it.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Option<&'static str>, String, u16)>>);

impl Observer for Recorder {
    fn served(&self, served: &Served<'_>) {
        self.0.lock().expect("not poisoned").push((
            served.service,
            served.path.to_owned(),
            served.status.as_u16(),
        ));
    }
}

#[tokio::test]
async fn observers_hear_of_every_request_with_the_service_that_claims_it() {
    let services = Services::new(refusal).with(Named::new("narrow", "/special/"));
    let limits = Limits {
        max_path_length: 16,
        ..Limits::default()
    };
    let recorder = Arc::new(Recorder::default());
    let server = Server::with_limits(services, limits).with_observer(recorder.clone());
    exchange(&server, &get("/special/x")).await;
    exchange(&server, &get("/elsewhere")).await;
    // Refused by `http` before the service: still the service's request.
    exchange(&server, &get("/special/too-long-a-path")).await;
    assert_eq!(
        *recorder.0.lock().expect("not poisoned"),
        [
            (Some("narrow"), "/special/x".to_owned(), 200),
            (None, "/elsewhere".to_owned(), 404),
            (Some("narrow"), "/special/too-long-a-path".to_owned(), 414),
        ]
    );
}
