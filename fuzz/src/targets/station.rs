//! The station's reading of what a device sends back over an `exec:` or
//! `serial:` link (docs/device-protocol.md §8, §9): frames as
//! `trustline_proto::device::read_frame` cuts them, each body checked by
//! `station::link::answer::check_answer` against the request's id and step.

use station::link::answer::{answer_step, check_answer, Checked};
use trustline_proto::device::{decode_response, read_frame, MAX_FRAME_LEN};

use crate::Outcome;

/// The `device_answer` harness. Byte 0 picks the step asked (2 to 17),
/// byte 1 the request id (1 to 255); the rest is the byte stream from the
/// device. Accepted when a frame answers the request; stale answers before
/// it are skipped as the link skips them.
pub fn device_answer(data: &[u8]) -> Outcome {
    let [step, id, stream @ ..] = data else {
        return Outcome::Refused;
    };
    let step = u32::from(step % 16) + 2;
    let id = u32::from(*id).max(1);
    let mut reader = stream;
    loop {
        let body = match read_frame(&mut reader) {
            Ok(Some(body)) => body,
            Ok(None) | Err(_) => return Outcome::Refused,
        };
        assert!(!body.is_empty() && body.len() <= MAX_FRAME_LEN);
        match check_answer(&body, id, step) {
            Ok(Checked::Answer(answer)) => {
                // Accepted means: it decodes, carries this id and answers
                // this step.
                assert_eq!(answer_step(&answer), step);
                let response = decode_response(&body).expect("an accepted answer decodes");
                assert_eq!(response.id, id);
                return Outcome::Accepted;
            }
            Ok(Checked::Stale(earlier)) => {
                assert!(earlier != 0 && earlier < id);
            }
            Err(e) => {
                // Every refusal has a stable reason, and the device's text
                // is safe to print.
                let reason = e.reason();
                assert!(
                    reason.starts_with("device:") || reason.starts_with("link:"),
                    "{reason}"
                );
                let text = e.to_string();
                assert!(!text.chars().any(char::is_control), "{text:?}");
                return Outcome::Refused;
            }
        }
    }
}
