//! WatchSegment: one task per watcher keeps the segment's member set and compares it with the
//! customers each committed write changed (sent by the customer service after the scoring index
//! has been refreshed). Time-relative membership (windows, ages, recency, model scores) is
//! re-checked for everyone when the UTC day changes and every `refresh_interval` (which also
//! picks up new models, tier policies and rule updates); a watcher that fell behind the change
//! feed re-checks everyone instead of missing changes.

use std::collections::HashSet;

use patron_domain::{CustomerId, Timestamp};
use patron_grpc::time::to_proto;
use patron_proto::segmentation::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::membership;
use crate::service::SegmentationApi;

type Tx = mpsc::Sender<Result<pb::WatchSegmentResponse, Status>>;

fn message(
    id: &CustomerId,
    change: pb::MembershipChange,
    now: Timestamp,
) -> pb::WatchSegmentResponse {
    pb::WatchSegmentResponse {
        customer_id: id.as_str().to_owned(),
        change: change.into(),
        observe_time: Some(to_proto(now)),
    }
}

/// Microseconds until the next UTC midnight after `now`.
fn until_next_day(now: Timestamp) -> std::time::Duration {
    let next = now.day().as_days() + 1;
    let micros = patron_domain::Day::from_days(next).start().as_micros() - now.as_micros();
    std::time::Duration::from_micros(u64::try_from(micros.max(1)).unwrap_or(1))
}

fn gone(segment: &str) -> Status {
    patron_grpc::ApiError::not_found(patron_grpc::Reason::SegmentNotFound, "segment", segment)
        .into()
}

/// Re-checks everyone and sends the differences. `false` when the client went away or the
/// segment is gone.
async fn rescan(
    api: &SegmentationApi,
    segment: &str,
    members: &mut HashSet<CustomerId>,
    tx: &Tx,
) -> bool {
    let now = patron_grpc::time::now();
    let api2 = api.clone();
    let seg = segment.to_owned();
    let fresh = match tokio::task::spawn_blocking(move || api2.members_now(&seg, now)).await {
        Ok(Some(set)) => set,
        Ok(None) => {
            let _ = tx.send(Err(gone(segment))).await;
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, "watch rescan failed");
            return true;
        }
    };
    let mut entered: Vec<&CustomerId> = fresh.difference(members).collect();
    let mut exited: Vec<&CustomerId> = members.difference(&fresh).collect();
    entered.sort();
    exited.sort();
    for id in exited {
        if tx
            .send(Ok(message(id, pb::MembershipChange::Exited, now)))
            .await
            .is_err()
        {
            return false;
        }
    }
    for id in entered {
        if tx
            .send(Ok(message(id, pb::MembershipChange::Entered, now)))
            .await
            .is_err()
        {
            return false;
        }
    }
    *members = fresh;
    true
}

/// The members a watch starts from, taken before the call returns: a change committed after
/// the caller has the stream is then always a change against this baseline (taken later, in the
/// watcher's task, it could already include a write the caller made after opening the stream,
/// and that write would never be reported).
pub(crate) async fn baseline(
    api: &SegmentationApi,
    segment: &str,
) -> Option<(HashSet<CustomerId>, Timestamp)> {
    let now = patron_grpc::time::now();
    let api = api.clone();
    let seg = segment.to_owned();
    let members = tokio::task::spawn_blocking(move || api.members_now(&seg, now))
        .await
        .ok()??;
    Some((members, now))
}

pub(crate) async fn run(
    api: SegmentationApi,
    segment: String,
    initial: bool,
    (mut members, now): (HashSet<CustomerId>, Timestamp),
    mut changes: broadcast::Receiver<std::sync::Arc<[CustomerId]>>,
    tx: Tx,
) {
    if initial {
        let mut sorted: Vec<&CustomerId> = members.iter().collect();
        sorted.sort();
        for id in sorted {
            if tx
                .send(Ok(message(id, pb::MembershipChange::Initial, now)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let interval = api.settings().refresh_interval;
    let mut next_full = tokio::time::Instant::now() + interval;
    let mut next_day = tokio::time::Instant::now() + until_next_day(now);
    loop {
        let deadline = next_full.min(next_day);
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep_until(deadline) => {
                if !rescan(&api, &segment, &mut members, &tx).await {
                    return;
                }
                let now_i = tokio::time::Instant::now();
                next_full = now_i + interval;
                next_day = now_i + until_next_day(patron_grpc::time::now());
            }
            msg = changes.recv() => match msg {
                Ok(ids) => {
                    let Some((snapshot, program)) = api.current(&segment) else {
                        let _ = tx.send(Err(gone(&segment))).await;
                        return;
                    };
                    let state = api.engine().state();
                    let now = patron_grpc::time::now();
                    let mut out = Vec::new();
                    for id in ids.iter() {
                        let is = api
                            .engine()
                            .get(id)
                            .is_some_and(|row| membership::is_member(&row, &program, &state, &snapshot, now));
                        let was = members.contains(id);
                        if is && !was {
                            members.insert(id.clone());
                            out.push(message(id, pb::MembershipChange::Entered, now));
                        } else if was && !is {
                            members.remove(id);
                            out.push(message(id, pb::MembershipChange::Exited, now));
                        }
                    }
                    for m in out {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "segment watcher fell behind; re-checking everyone");
                    if !rescan(&api, &segment, &mut members, &tx).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
