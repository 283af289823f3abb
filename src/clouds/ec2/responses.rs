//! Response bodies and headers exactly as EC2 writes them.
//!
//! Every answer carries `Server: EC2ws`, a `Content-Type` (`text/plain` for everything but
//! user-data, JSON documents included) and its `Content-Length`. A HEAD gets the same status
//! and headers with an empty body. Error pages are the XHTML a real instance sends.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use time::OffsetDateTime;

pub const TEXT_PLAIN: &str = "text/plain";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// A response before HEAD handling and the common headers are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// Set when the reply hands out role credentials (see [`CredentialsRead`]).
    pub credentials_read: Option<crate::credentials::CredentialsRead>,
}

impl Reply {
    /// 200 with a `text/plain` body.
    pub fn text(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: TEXT_PLAIN,
            body: body.into(),
            extra_headers: Vec::new(),
            credentials_read: None,
        }
    }

    /// 200 with an `application/octet-stream` body (user-data).
    pub fn octets(body: Bytes) -> Reply {
        Reply {
            content_type: OCTET_STREAM,
            ..Reply::text(body)
        }
    }

    /// An error status with EC2's XHTML page for it.
    pub fn error(status: StatusCode) -> Reply {
        Reply {
            status,
            ..Reply::text(error_page(status))
        }
    }

    /// A status with no body (the token path's 405).
    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            ..Reply::text(Bytes::new())
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.extra_headers.push((name, value));
        self
    }

    /// The final response; for HEAD the body is dropped but `Content-Length` still tells its size.
    pub fn into_response(self, is_head: bool) -> Response<Bytes> {
        let length = self.body.len() as u64;
        let mut response = Response::new(if is_head { Bytes::new() } else { self.body });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("EC2ws"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        for (name, value) in self.extra_headers {
            headers.insert(name, value);
        }
        response
    }
}

/// The XHTML error page of a real instance (byte-exact for 404), with the status's title.
pub fn error_page(status: StatusCode) -> String {
    let title = match status {
        StatusCode::BAD_REQUEST => "400 - Missing or Invalid Parameters",
        StatusCode::UNAUTHORIZED => "401 - Unauthorized",
        StatusCode::FORBIDDEN => "403 - Forbidden",
        StatusCode::NOT_FOUND => "404 - Not Found",
        StatusCode::METHOD_NOT_ALLOWED => "405 - Method Not Allowed",
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
    fn head_keeps_content_length_but_drops_the_body() {
        let response = Reply::text("abc").into_response(true);
        assert!(response.body().is_empty());
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "3");
        assert_eq!(response.headers()[header::SERVER], "EC2ws");
    }
}
