//! `tincan chat`: run the tincanchat room ([`crate::protocol::chat`]) under the event or threaded
//! model, on 127.0.0.1:4040 unless `--listen` says otherwise.

use std::sync::Arc;

use clap::{Args, ValueEnum};

use crate::error::{Error, Result};
use crate::flags::ServerArgs;
use crate::protocol::chat::{redis_link, ChatConfig, ChatService, RedisRoom, MAX_NICK_CHARS};
use crate::protocol::Service;

/// Where `tincan chat` listens by default: the book's port, on loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4040";

/// Room for a label (`[v6 address]:port` or a 32-character name), `": "` and the NUL that a
/// relayed message carries on top of its text, and for its place in a queue; `--max-queue`
/// must hold one longest message.
const LINE_OVERHEAD: usize = 4 * MAX_NICK_CHARS + 64;

/// `tincan chat --help` opens with these, as every subcommand's help does.
macro_rules! chat_examples {
    () => {
        "\
Examples:
  tincan chat                                   a room on 127.0.0.1:4040
  tincan chat -l :4040 --model threaded         every interface, a thread per client
  tincan chat --tls-self-signed ~/.tincan/tls   over TLS; clients trust ~/.tincan/tls/cert.pem
  tincan chat --redis redis://127.0.0.1:6379 --room lobby    one room over several servers
  tincan talk localhost                         join it (tincan talk --help)"
    };
}

const CHAT_HELP: &str = concat!(
    chat_examples!(),
    "

Protocol (tincanchat, from Learning Python Network Programming): each message is UTF-8 text ending in a NUL byte. Every message a
client sends goes to every connected client, the sender included, as \"LABEL: MESSAGE\" followed
by NUL, in one order that every client sees alike. LABEL is the client's ip:port until it picks
a name.

Commands (a message that is exactly one of these):
  /nick NAME   be known as NAME (1-32 characters; no control, invisible or line-breaking
               characters, no ':', not starting with '*' or a space; not a name someone else
               has); announced to everyone
  /who         list who is connected (answered to you only; at most 100 names, then a count)
Everything else, including other text starting with '/', is an ordinary message.

Lines from the server itself start with \"* \":
  * 127.0.0.1:5555 joined            * alice left
  * 127.0.0.1:5555 is now known as alice
  * 3 connected: alice, bob, 127.0.0.1:5557
  * nick refused: REASON             * disconnected: REASON
  * server shutting down
Join, leave and rename notices can be turned off with --notices off.

A client that sends invalid UTF-8 or a message over --max-message is disconnected (the reason is
logged, and sent to it); nobody else notices. A sender faster than some reader is paused while a
client that still reads has more than half of --max-queue waiting, so a burst (a paste) reaches
everyone. A client that stops reading holds nobody for longer than --max-stall, and is
disconnected once more than --max-queue bytes wait for it, so it cannot stop the room or grow the
server's memory.
Runs under --model event (any poller) or --model threaded; iterative is refused, and so is
prefork unless the room is on Redis.

One room on many servers (--redis): every tincan chat started with the same --redis and --room
serves one room, through a Redis Stream (Redis 5 or later). Every client on every server sees
every message in the stream's one order, its own included once it comes back from Redis; join,
leave and rename notices cross servers, nicks are unique across them and /who lists everyone
(sorted by name). Each prefork worker is one more server of the room. For example:
  tincan chat --listen 127.0.0.1:4040 --redis redis://127.0.0.1:6379 --room lobby
  tincan chat --listen 127.0.0.1:4041 --redis redis://127.0.0.1:6379 --room lobby
A link to Redis that breaks is dialled again (with backoff) and reading resumes where it left
off, so nothing is lost or shown twice. While Redis cannot be reached, a message is answered
to its sender alone, and every client is told once when the room goes offline and when it is
back:
  * not delivered: cannot reach Redis at redis://127.0.0.1:6379 (connection refused); ...
  * room offline: ...                * room back online
  * missed N messages: ...           (a server that was away past --redis-history)"
);

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// The tincanchat chat service: every message goes to every connected client.
#[derive(Args, Debug)]
#[command(after_help = chat_examples!(), after_long_help = CHAT_HELP)]
pub struct ChatArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// Longest message a client may send, NUL excluded (bytes; K/M suffixes: 64K = 65536).
    /// A longer one disconnects that client.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::size::<usize>,
        default_value = crate::units::show_size(ChatConfig::default().max_message as u64))]
    pub max_message: usize,

    /// Bytes of relayed messages that may wait for one client to read them, each message
    /// counted with 32 bytes more for its place in the queue; a client with more waiting is
    /// disconnected as too slow (K/M suffixes allowed).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::size::<usize>,
        default_value = crate::units::show_size(ChatConfig::default().max_queue as u64))]
    pub max_queue: usize,

    /// Announce joins, leaves and renames to the room.
    #[arg(long, value_enum, value_name = "on|off", default_value = "on")]
    pub notices: OnOff,

    /// Seconds a client that is behind but still reading may hold the senders back. A sender
    /// pauses while someone who reads has over half of --max-queue waiting; one that has read
    /// nothing for this long no longer holds anyone, and is dropped if its queue overflows
    /// (at most 60).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = ChatConfig::default().max_stall.as_secs_f64(),
        allow_negative_numbers = true
    )]
    pub max_stall: f64,

    /// Serve one room with every tincan chat on this Redis and --room, through a Redis Stream:
    /// redis://HOST:PORT or redis://HOST:PORT/DB. Allows --model prefork (each worker is one
    /// more server of the room).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// The room's name in Redis (with --redis): servers with the same name share one room.
    #[arg(long, value_name = "NAME", default_value = "lobby", requires = "redis")]
    pub room: String,

    /// Messages the room's stream keeps in Redis, about (with --redis); a server away for longer
    /// tells its clients how many they missed.
    #[arg(
        long,
        value_name = "COUNT",
        default_value = "10000",
        requires = "redis"
    )]
    pub redis_history: u64,
}

impl ChatArgs {
    /// The room's configuration, checked for limits that cannot work together.
    pub fn config(&self) -> Result<ChatConfig> {
        if self.max_message == 0 {
            return Err(Error::Usage("--max-message must be at least 1 byte".into()));
        }
        let longest_line = self.max_message.saturating_add(LINE_OVERHEAD);
        if self.max_queue < longest_line {
            return Err(Error::Usage(format!(
                "--max-queue ({} bytes) must hold at least one longest message (--max-message {} \
                 bytes, plus {LINE_OVERHEAD} for its label); raise --max-queue to {longest_line} \
                 or more",
                self.max_queue, self.max_message
            )));
        }
        if self.server.defer_accept.is_some_and(|s| s > 0) {
            return Err(Error::Usage(
                "--defer-accept keeps a client out until it sends something, and a chat client \
                 may only listen; leave it off for tincan chat"
                    .into(),
            ));
        }
        Ok(ChatConfig {
            max_message: self.max_message,
            max_queue: self.max_queue,
            notices: self.notices == OnOff::On,
            max_stall: max_stall(self.max_stall)?,
            redis: self.redis_room()?,
        })
    }

    /// `--redis`, `--room` and `--redis-history`, checked.
    fn redis_room(&self) -> Result<Option<RedisRoom>> {
        let Some(url) = &self.redis else {
            return Ok(None);
        };
        if !url.starts_with("redis://") {
            return Err(Error::Usage(format!(
                "--redis {url} is not a Redis address; write redis://HOST:PORT or \
                 redis://HOST:PORT/DB"
            )));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(Error::Usage(format!(
                "--redis {url} is not a Redis address ({e}); write redis://HOST:PORT or \
                 redis://HOST:PORT/DB"
            )));
        }
        let room = &self.room;
        if room.is_empty()
            || room.chars().count() > 64
            || room.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Usage(format!(
                "--room {room:?} must be 1 to 64 characters without spaces or control characters"
            )));
        }
        if self.redis_history == 0 {
            return Err(Error::Usage(
                "--redis-history must keep at least 1 message".into(),
            ));
        }
        Ok(Some(RedisRoom {
            url: url.clone(),
            room: room.clone(),
            history: self.redis_history,
        }))
    }
}

/// The longest `--max-stall`: a reader silent for a minute is not catching up on a burst.
pub const MAX_STALL_LIMIT: f64 = 60.0;

fn max_stall(v: f64) -> Result<std::time::Duration> {
    if v > MAX_STALL_LIMIT {
        return Err(Error::Usage(format!(
            "--max-stall {v} is more than {MAX_STALL_LIMIT} seconds; a reader silent that long \
             is not catching up, and everyone else would wait for it"
        )));
    }
    crate::units::seconds("--max-stall", v, true)
}

pub fn run(args: ChatArgs) -> Result<()> {
    let config = args.config()?;
    // A room on a Redis that is not there would only tell every client it is offline: say so
    // now, before listening.
    if let Some(room) = &config.redis {
        redis_link::check(room).map_err(Error::Setup)?;
    }
    let service = ChatService::new(config);
    // Refuse a model the room cannot honour before binding anything, so no `listening on` line
    // is ever printed for a server that will not run.
    let model = args.server.serve_options()?.model;
    model
        .honours(service.needs())
        .map_err(|e| Error::Usage(unfit(e)))?;
    let (listeners, opts) = args.server.setup(DEFAULT_LISTEN)?;
    crate::model::serve(listeners, Arc::new(service), &opts)?;
    Ok(())
}

/// The sentence for a model the room cannot run under, with the models it can.
fn unfit(e: crate::model::Unfit) -> String {
    use crate::model::Unfit;
    match e {
        Unfit::OneAtATime(who) => format!(
            "{who} needs every client connected at once, and --model iterative serves one at a \
             time; use --model event or --model threaded"
        ),
        Unfit::NoSharedMemory(who) => format!(
            "{who} cannot run under --model prefork: worker processes share no memory, so \
             clients in different workers could not reach each other; use --model event or \
             --model threaded"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_stall_holds_at_its_edge_and_refuses_one_over() {
        assert_eq!(max_stall(60.0).unwrap(), std::time::Duration::from_secs(60));
        assert_eq!(max_stall(0.0).unwrap(), std::time::Duration::ZERO);
        let e = max_stall(60.5).unwrap_err().to_string();
        assert!(
            e.contains("--max-stall 60.5 is more than 60 seconds"),
            "{e}"
        );
        assert!(max_stall(-1.0).is_err());
    }
}
