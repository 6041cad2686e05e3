//! A client of the admin API, for the CLI: JSON requests with the bearer token, and the
//! event stream read line by line.

use std::time::Duration;

use serde_json::Value;

/// Why a request to the admin API did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address: the node is not running (or listens elsewhere).
    #[error("no admin API answers at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The API refused the request (4xx): the caller's input or credentials.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    /// The node failed to answer (5xx) or answered something unreadable.
    #[error("{0}")]
    Failed(String),
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the API at `base` (`http://127.0.0.1:7701`).
    pub fn new(base: &str, token: &str) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client without TLS builds"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() || e.is_timeout() {
            ClientError::Unreachable {
                url: self.base.clone(),
                reason: error_chain(&e),
            }
        } else {
            ClientError::Failed(format!("{}: {}", self.base, error_chain(&e)))
        }
    }

    /// `GET path`, answered with JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let request = self.http.get(self.url(path)).bearer_auth(&self.token);
        self.answer(request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let request = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.answer(request).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let response = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let message = || {
            value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string())
        };
        if status.is_client_error() {
            Err(ClientError::Refused {
                status: status.as_u16(),
                message: message(),
            })
        } else if !status.is_success() {
            Err(ClientError::Failed(format!(
                "{} (HTTP {status})",
                message()
            )))
        } else {
            Ok(value)
        }
    }

    /// Reads the event stream at `path`, from after `last_id` if given, calling `each` for
    /// every event until the stream ends or `each` returns false.
    pub async fn stream(
        &self,
        path: &str,
        last_id: Option<u64>,
        mut each: impl FnMut(StreamEvent) -> bool,
    ) -> Result<(), ClientError> {
        let mut request = self.http.get(self.url(path)).bearer_auth(&self.token);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let mut response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            return Err(if status.is_client_error() {
                ClientError::Refused {
                    status: status.as_u16(),
                    message,
                }
            } else {
                ClientError::Failed(format!("{message} (HTTP {status})"))
            });
        }
        let mut parser = SseParser::default();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            for event in parser.push(&chunk) {
                if !each(event) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Splits a Server-Sent Events byte stream into events (comments skipped).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() && id.is_none() {
                continue; // a comment or keepalive
            }
            let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
            events.push(StreamEvent { id, event, data });
        }
        events
    }
}

fn find_blank_line(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_put_back_together_and_comments_skipped() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b": hello\n\nid: 3\nevent: peer_state\nda")
            .is_empty());
        let events =
            parser.push(b"ta: {\"to\":\"failed\"}\n\nevent: missed\ndata: {\"missed\":2}\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, Some(3));
        assert_eq!(events[0].event, "peer_state");
        assert_eq!(events[0].data["to"], "failed");
        assert_eq!((events[1].id, events[1].event.as_str()), (None, "missed"));
    }
}
