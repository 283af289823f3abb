//! The endpoint's questions about who is calling, and the answers its runtime hands back.
//!
//! Callers matter only once the table is full: to choose whose connection gives way, the
//! endpoint must know who the newcomer is and who holds every live connection
//! ([`super::admission`]). Finding out means asking the kernel (`sock_diag`), which the endpoint
//! never does: a SYN that finds the table full while a caller it needs is unknown is *held*
//! ([`super::Received::Held`]), and [`super::Endpoint::caller_questions`] lists what to ask. The
//! runtime asks `crate::attribution` outside the stack lock and hands the answers back with
//! [`super::Endpoint::answer_callers`], which feeds the held SYNs again in their order. An answer
//! about a connection is kept for its life, so a full table asks about each connection once.
//!
//! Plain data: questions name both ends of a connection as the kernel names them.

use super::schedule::ConnectionId;
use super::table::Flow;
use crate::attribution::Caller;
use smoltcp::wire::IpEndpoint;
use std::net::{IpAddr, SocketAddr};

/// What the endpoint must know before it can admit the SYNs it holds.
#[derive(Debug, Clone, Default)]
pub struct CallerQuestions {
    questions: Vec<Question>,
}

/// One question: who is behind the connection from `client` to our `server` end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    about: Subject,
    /// The client's end.
    pub client: SocketAddr,
    /// Our end, the address the client dialled.
    pub server: SocketAddr,
}

/// The answers to [`CallerQuestions`], for [`super::Endpoint::answer_callers`].
#[derive(Debug, Clone, Default)]
pub struct CallerAnswers {
    answers: Vec<(Subject, Caller)>,
}

/// What a question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    /// A connection in the table.
    Connection(ConnectionId),
    /// The client of a held SYN.
    Newcomer(Flow),
}

impl CallerQuestions {
    pub(crate) fn push(&mut self, about: Subject, client: IpEndpoint, server: SocketAddr) {
        self.questions.push(Question {
            about,
            client: socket_addr(client),
            server,
        });
    }

    /// The questions, newcomers first.
    pub fn iter(&self) -> impl Iterator<Item = &Question> {
        self.questions.iter()
    }

    /// How many questions there are.
    pub fn len(&self) -> usize {
        self.questions.len()
    }

    /// Whether there is nothing to ask (the held SYNs only wait to be fed again).
    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// Answers every question with `who(client, server)`.
    pub fn answer(self, mut who: impl FnMut(SocketAddr, SocketAddr) -> Caller) -> CallerAnswers {
        CallerAnswers {
            answers: self
                .questions
                .into_iter()
                .map(|question| (question.about, who(question.client, question.server)))
                .collect(),
        }
    }
}

impl CallerAnswers {
    pub(crate) fn into_inner(self) -> Vec<(Subject, Caller)> {
        self.answers
    }
}

/// A SYN that found the table full, held until its caller and every live connection's are known.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) packet: Vec<u8>,
    pub(crate) flow: Flow,
    pub(crate) caller: Option<Caller>,
}

/// How many SYNs may wait for answers at once: far more than the runtime feeds between two
/// answers (one read batch); beyond it a SYN at the limit is refused.
pub(crate) const MAX_HELD: usize = 256;

pub(crate) fn socket_addr(endpoint: IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(endpoint.addr), endpoint.port)
}
