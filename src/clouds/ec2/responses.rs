//! Response bodies and headers exactly as EC2 writes them.
//!
//! Every answer carries `Server: EC2ws`, a `Content-Type` (`text/plain` for everything but
//! user-data, JSON documents included) and its `Content-Length`, in that order. (A HEAD gets the
//! same status and headers with an empty body: `http` does that for every service.) Error pages
//! are the XHTML a real instance sends.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};
use time::OffsetDateTime;

use crate::http::Reply;

/// The `Content-Type` of every EC2 answer but user-data, JSON documents and error pages
/// included.
pub const TEXT_PLAIN: &str = "text/plain";
/// The `Content-Type` of `user-data`.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// `status` with a body of `content_type`, and the `Server` header every EC2 answer starts with.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    Reply::new(status)
        .header(header::SERVER, HeaderValue::from_static("EC2ws"))
        .body(content_type, body)
}

/// 200 with a `text/plain` body.
pub fn text(body: impl Into<Bytes>) -> Reply {
    reply(StatusCode::OK, TEXT_PLAIN, body)
}

/// 200 with an `application/octet-stream` body (user-data).
pub fn octets(body: Bytes) -> Reply {
    reply(StatusCode::OK, OCTET_STREAM, body)
}

/// An error status with EC2's XHTML page for it; also the page of every refusal of `http`'s
/// own (see `crate::clouds`), which is what a real instance's clients expect to see.
pub fn error(status: StatusCode) -> Reply {
    reply(status, TEXT_PLAIN, error_page(status))
}

/// A status with no body (the token path's 405).
pub fn empty(status: StatusCode) -> Reply {
    reply(status, TEXT_PLAIN, Bytes::new())
}

/// The XHTML error page of a real instance (byte-exact for 404), with the status's title.
pub fn error_page(status: StatusCode) -> String {
    let title = match status {
        StatusCode::BAD_REQUEST => "400 - Missing or Invalid Parameters",
        StatusCode::UNAUTHORIZED => "401 - Unauthorized",
        StatusCode::FORBIDDEN => "403 - Forbidden",
        StatusCode::NOT_FOUND => "404 - Not Found",
        StatusCode::METHOD_NOT_ALLOWED => "405 - Method Not Allowed",
        // What a throttled instance answers (`ctl fault --throttle`).
        StatusCode::TOO_MANY_REQUESTS => "429 - Too Many Requests",
        _ => "500 - Internal Server Error",
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  \
         <title>{title}</title>\n \
         </head>\n \
         <body>\n  \
         <h1>{title}</h1>\n \
         </body>\n\
         </html>"
    )
}

/// A JSON object in EC2's layout: two-space indent, `" : "` between key and value, fields in
/// the given order.
pub fn pretty_json(fields: &[(&str, serde_json::Value)]) -> String {
    let lines: Vec<String> = fields
        .iter()
        .map(|(key, value)| {
            let value = match value {
                // EC2 prints arrays inline with spaces: `[ "a", "b" ]`.
                serde_json::Value::Array(items) if !items.is_empty() => {
                    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
                    format!("[ {} ]", items.join(", "))
                }
                other => other.to_string(),
            };
            format!("  {} : {value}", serde_json::Value::from(*key))
        })
        .collect();
    format!("{{\n{}\n}}", lines.join(",\n"))
}

/// UTC with second precision and a `Z`, as in `2012-04-26T16:39:16Z`.
pub fn iso8601_utc_seconds(moment: OffsetDateTime) -> String {
    let utc = moment.to_offset(time::UtcOffset::UTC);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    utc.format(format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const REAL_404: &str = "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>
<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"
\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">
<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">
 <head>
  <title>404 - Not Found</title>
 </head>
 <body>
  <h1>404 - Not Found</h1>
 </body>
</html>";

    #[test]
    fn not_found_page_is_byte_exact() {
        assert_eq!(error_page(StatusCode::NOT_FOUND), REAL_404);
    }

    #[test]
    fn pretty_json_uses_spaced_colons() {
        let text = pretty_json(&[
            ("Code", "Success".into()),
            ("kernelId", serde_json::Value::Null),
        ]);
        assert_eq!(
            text,
            "{\n  \"Code\" : \"Success\",\n  \"kernelId\" : null\n}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["Code"], "Success");
    }

    #[test]
    fn times_are_utc_seconds_with_z() {
        let moment = datetime!(2017-05-17 17:09:54.123 +02:00);
        assert_eq!(iso8601_utc_seconds(moment), "2017-05-17T15:09:54Z");
    }

    #[test]
    fn every_reply_starts_with_the_server_then_its_type_and_length() {
        let reply = text("abc").header(header::ALLOW, HeaderValue::from_static("GET"));
        let names: Vec<&str> = reply.headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(names, ["server", "content-type", "content-length", "allow"]);
        assert_eq!(reply.headers[header::SERVER], "EC2ws");
        assert_eq!(reply.headers[header::CONTENT_LENGTH], "3");
    }
}
