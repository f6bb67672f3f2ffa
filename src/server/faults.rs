//! Faults the tests inject to prove that a dead or wedged thread is loud. Compiled in only with
//! the `test-faults` cargo feature (which the test command enables); a release build without it
//! has no fault at all, whatever its environment says.
//!
//! `WSRELAY_TEST_FAULT` names the fault; a worker that reads the text message `wsrelay-test-fault`
//! then carries it out:
//! - `worker-panic`: the worker thread panics;
//! - `worker-wedge`: the worker stops completing loop passes (sleeps forever);
//! - `worker-poll-error`: the worker's loop ends as if its poll had failed.

/// The message that sets off the fault.
pub const TRIGGER: &str = "wsrelay-test-fault";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a worker does when it reads the trigger.
pub enum Fault {
    Panic,
    Wedge,
    PollError,
}

/// The fault the environment asks for, if faults are compiled in.
pub fn from_env() -> Option<Fault> {
    if !cfg!(feature = "test-faults") {
        return None;
    }
    match std::env::var("WSRELAY_TEST_FAULT").ok()?.as_str() {
        "worker-panic" => Some(Fault::Panic),
        "worker-wedge" => Some(Fault::Wedge),
        "worker-poll-error" => Some(Fault::PollError),
        other => {
            log::warn!("WSRELAY_TEST_FAULT={other:?}: no such fault");
            None
        }
    }
}

/// `frame` (a whole server frame) is the trigger message.
pub fn is_trigger(frame: &[u8]) -> bool {
    frame.len() == 2 + TRIGGER.len() && frame[0] == 0x81 && &frame[2..] == TRIGGER.as_bytes()
}
