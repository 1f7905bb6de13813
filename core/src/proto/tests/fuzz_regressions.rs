//! Regressions found with the fuzz targets of `core/fuzz` (session_frames, session_ops,
//! handshake), as plain tests on the virtual clock.

use bytes::Bytes;

use super::harness::*;
use crate::proto::{Event, MuxKey};

/// Stream opens each cancelled at once, many to one message: the table stays almost
/// empty, but every admitted open queues its AckMux. Admission goes on while the queue
/// is full (a call is served rather than left to wait out its deadline), yet only up to
/// `max_queued_frames + max_muxes` queued frames: past that an open is dropped as a
/// reply would be, so the queue does not grow with the size of the peer's message.
#[test]
fn open_cancel_churn_in_one_message_keeps_the_outbound_queue_bounded() {
    let mut setup = Setup::default();
    setup.config.max_queued_frames = 64;
    setup.config.max_muxes = 16;
    let mut p = Pair::connected_with(setup);
    p.b.s.handle_message(p.now, open_cancel_churn(1000));

    let st = p.b.s.stats();
    assert_eq!(st.incoming_muxes, 0);
    assert!(
        st.queued_frames <= 64 + 16,
        "{} frames queued after one message",
        st.queued_frames
    );
    assert!(st.replies_dropped > 0);
    // Every admitted open ended exactly once (cancelled by the peer).
    let mut opened = Vec::new();
    let mut closed = Vec::new();
    while let Some(e) = p.b.s.poll_event() {
        match e {
            Event::StreamOpened { mux_id, .. } => opened.push(mux_id),
            Event::Closed { key, .. } => closed.push(key),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!opened.is_empty());
    assert_eq!(
        closed,
        opened
            .iter()
            .map(|id| MuxKey::incoming(*id))
            .collect::<Vec<_>>()
    );

    // Once the queue drained, calls are admitted again.
    p.drive();
    let id =
        p.a.s
            .request(p.now, ECHO, Bytes::from_static(b"after"), None)
            .unwrap();
    p.drive();
    let (mux, payload, _) = p.b.expect_request();
    assert!(p.b.s.respond(p.now, mux, Ok(payload)));
    p.drive();
    assert_eq!(&p.a.expect_response(id).unwrap()[..], b"after");
}
