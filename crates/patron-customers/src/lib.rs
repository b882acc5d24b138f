//! `patron.customers.v1.CustomerService`: customers and their events.
//!
//! Handlers validate and convert requests (see [`convert`]), call the [`Store`], and map errors
//! through [`patron_grpc::ApiError`]; they hold no state of their own.

pub mod convert;

use std::collections::HashMap;
use std::sync::Arc;

use patron_domain::event::MAX_EVENTS_PER_CALL;
use patron_domain::{Currency, CustomerId, Event, EventId, Timestamp, Violations};
use patron_grpc::{ApiError, ApiResult, PageToken, Reason, Respond, page_size};
use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_server::CustomerService;
use patron_store::{EventCursor, Store};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::Context;

/// Most customers one UpsertCustomers call may carry.
pub const MAX_CUSTOMERS_PER_CALL: usize = 1_000;
/// Rejections StreamEvents reports in detail; the rest are only counted.
pub const MAX_REPORTED_REJECTIONS: usize = 100;

/// Settings of the customer service.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The currency the books are kept in; money in another currency is refused.
    pub currency: Currency,
    /// Events StreamEvents commits per transaction.
    pub stream_batch_size: usize,
}

/// The CustomerService implementation.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    store: Arc<dyn Store>,
    settings: Settings,
}

impl CustomerApi {
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> Self {
        Self { store, settings }
    }

    fn context(&self) -> Context {
        Context {
            now: patron_grpc::time::now(),
            currency: self.settings.currency,
        }
    }

    async fn existing_customer(&self, id: &CustomerId) -> ApiResult<patron_store::CustomerRecord> {
        self.store
            .get_customer(id)
            .await?
            .ok_or_else(|| ApiError::not_found(Reason::CustomerNotFound, "customer", id.as_str()))
    }
}

/// Checks a batch's size: at least one item, at most `max`.
fn check_batch_len(len: usize, max: usize, field: &str) -> ApiResult<()> {
    if len == 0 {
        return Err(ApiError::invalid_field(
            Reason::EmptyBatch,
            field,
            format!("must contain 1 to {max} items"),
        ));
    }
    if len > max {
        return Err(ApiError::invalid_field(
            Reason::BatchTooLarge,
            field,
            format!("has {len} items; at most {max} are allowed per call"),
        ));
    }
    Ok(())
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn count64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Running totals of a StreamEvents call.
#[derive(Debug, Default)]
struct StreamTotals {
    received: usize,
    recorded: usize,
    duplicates: usize,
    created: usize,
    rejected: usize,
    rejections: Vec<pb::RejectedEvent>,
}

/// The handlers, one per RPC: each returns an [`ApiResult`], which the `CustomerService` impl
/// below converts to a `Status` once, in [`Respond::respond`].
impl CustomerApi {
    async fn upsert_customers(
        &self,
        request: Request<pb::UpsertCustomersRequest>,
    ) -> ApiResult<pb::UpsertCustomersResponse> {
        let pb::UpsertCustomersRequest { customers } = request.into_inner();
        check_batch_len(customers.len(), MAX_CUSTOMERS_PER_CALL, "customers")?;
        let ctx = self.context();
        let mut v = Violations::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut parsed = Vec::with_capacity(customers.len());
        for (i, c) in customers.iter().enumerate() {
            let path = format!("customers[{i}]");
            if let Some(first) = seen.insert(c.customer_id.as_str(), i) {
                v.add(
                    format!("{path}.customer_id"),
                    format!("repeats customers[{first}].customer_id"),
                );
            }
            if let Some(c) = convert::customer_from_proto(c, &path, ctx, &mut v) {
                parsed.push(c);
            }
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let stored = self.store.upsert_customers(&parsed, ctx.now).await?;
        let created = stored.iter().filter(|u| u.created).count();
        Ok(pb::UpsertCustomersResponse {
            customers: stored
                .iter()
                .map(|u| convert::record_to_proto(&u.record, self.settings.currency))
                .collect(),
            created_count: count(created),
        })
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> ApiResult<pb::GetCustomerResponse> {
        let pb::GetCustomerRequest { customer_id } = request.into_inner();
        let id = patron_grpc::parse_customer_id(&customer_id, "customer_id")?;
        let record = self.existing_customer(&id).await?;
        Ok(pb::GetCustomerResponse {
            customer: Some(convert::record_to_proto(&record, self.settings.currency)),
        })
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> ApiResult<pb::ListCustomersResponse> {
        const SCOPE: &str = "customers";
        let pb::ListCustomersRequest {
            page_size: size,
            page_token,
        } = request.into_inner();
        let limit = page_size(size)?;
        let after = match PageToken::decode(&page_token, SCOPE, 1)? {
            None => None,
            Some(t) => Some(CustomerId::parse(t.position[0].clone()).map_err(|_| {
                ApiError::invalid_field(
                    Reason::InvalidPageToken,
                    "page_token",
                    "is not a valid page token",
                )
            })?),
        };
        // One extra row tells whether another page exists.
        let mut records = self.store.list_customers(after.as_ref(), limit + 1).await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => PageToken::encode(SCOPE, &[last.customer.customer_id.as_str()]),
            _ => String::new(),
        };
        Ok(pb::ListCustomersResponse {
            customers: records
                .iter()
                .map(|r| convert::record_to_proto(r, self.settings.currency))
                .collect(),
            next_page_token,
        })
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> ApiResult<pb::DeleteCustomerResponse> {
        let pb::DeleteCustomerRequest { customer_id } = request.into_inner();
        let id = patron_grpc::parse_customer_id(&customer_id, "customer_id")?;
        let deleted = self.store.delete_customer(&id).await?;
        match deleted {
            Some(n) => Ok(pb::DeleteCustomerResponse {
                deleted_event_count: i64::try_from(n).unwrap_or(i64::MAX),
            }),
            None => Err(ApiError::not_found(
                Reason::CustomerNotFound,
                "customer",
                customer_id,
            )),
        }
    }

    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> ApiResult<pb::RecordEventsResponse> {
        let pb::RecordEventsRequest { events } = request.into_inner();
        check_batch_len(events.len(), MAX_EVENTS_PER_CALL, "events")?;
        let ctx = self.context();
        let mut v = Violations::new();
        let parsed: Vec<Event> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| convert::event_from_proto(e, &format!("events[{i}]"), ctx, &mut v))
            .collect();
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let out = self.store.record_events(&parsed, ctx.now).await?;
        ingested(&out);
        Ok(pb::RecordEventsResponse {
            recorded_count: count(out.recorded),
            duplicate_count: count(out.duplicate_indexes.len()),
            duplicate_indexes: out.duplicate_indexes.into_iter().map(count).collect(),
            created_customer_count: count(out.created_customers),
        })
    }

    async fn stream_events(
        &self,
        request: Request<Streaming<pb::StreamEventsRequest>>,
    ) -> ApiResult<pb::StreamEventsResponse> {
        let mut stream = request.into_inner();
        let batch_size = self.settings.stream_batch_size.max(1);
        // Decoding and validating the next batch overlaps with writing the previous one; the
        // channel's capacity bounds the events held in memory to a few batches.
        let (tx, mut rx) = mpsc::channel::<Vec<Event>>(2);
        let store = Arc::clone(&self.store);
        let writer = tokio::spawn(async move {
            let mut recorded = 0usize;
            let mut duplicates = 0usize;
            let mut created = 0usize;
            let mut written = async || {
                while let Some(batch) = rx.recv().await {
                    let out = store
                        .record_events(&batch, patron_grpc::time::now())
                        .await?;
                    ingested(&out);
                    recorded += out.recorded;
                    duplicates += out.duplicate_indexes.len();
                    created += out.created_customers;
                }
                Ok::<_, patron_store::StoreError>(())
            };
            written().await?;
            Ok::<_, patron_store::StoreError>((recorded, duplicates, created))
        });

        let mut totals = StreamTotals::default();
        let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
        let mut index = 0usize;
        let mut failure: Option<Status> = None;
        let mut writer_gone = false;
        'read: while let Some(message) = stream.next().await {
            let message = match message {
                Ok(m) => m,
                Err(status) => {
                    failure = Some(status);
                    break;
                }
            };
            let ctx = self.context();
            for e in &message.events {
                let mut v = Violations::new();
                match convert::event_from_proto(e, "", ctx, &mut v) {
                    Some(event) => batch.push(event),
                    None => {
                        totals.rejected += 1;
                        for violation in v.into_vec() {
                            if totals.rejections.len() < MAX_REPORTED_REJECTIONS {
                                totals.rejections.push(pb::RejectedEvent {
                                    index: count64(index),
                                    event_id: e.event_id.clone(),
                                    field: violation.field.trim_start_matches('.').to_owned(),
                                    description: violation.description,
                                });
                            }
                        }
                    }
                }
                index += 1;
                if batch.len() >= batch_size {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                    if tx.send(full).await.is_err() {
                        // The writer stopped on a storage error; it is reported below.
                        writer_gone = true;
                        break 'read;
                    }
                }
            }
            totals.received = index;
        }
        if failure.is_none() && !writer_gone && !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ApiError::internal(format!("stream writer failed: {e}")))?;
        if let Some(status) = failure {
            tracing::warn!(%status, received = index, "event stream broke; committed batches stay");
            return Err(ApiError::RequestStream(status));
        }
        let (recorded, duplicates, created) = written?;
        totals.recorded = recorded;
        totals.duplicates = duplicates;
        totals.created = created;
        tracing::info!(
            received = totals.received,
            recorded,
            duplicates,
            rejected = totals.rejected,
            "event stream loaded"
        );
        Ok(pb::StreamEventsResponse {
            received_count: count64(totals.received),
            recorded_count: count64(totals.recorded),
            duplicate_count: count64(totals.duplicates),
            rejected_count: count64(totals.rejected),
            rejections: totals.rejections,
            created_customer_count: count64(totals.created),
        })
    }

    async fn list_customer_events(
        &self,
        request: Request<pb::ListCustomerEventsRequest>,
    ) -> ApiResult<pb::ListCustomerEventsResponse> {
        let pb::ListCustomerEventsRequest {
            customer_id,
            page_size: size,
            page_token,
            kinds,
        } = request.into_inner();
        let mut v = Violations::new();
        let id = convert::customer_id(&customer_id, "customer_id", &mut v);
        let limit = page_size(size);
        let mut domain_kinds = Vec::new();
        for (i, k) in kinds.iter().enumerate() {
            if let Some(Some(kind)) = v.check(&format!("kinds[{i}]"), convert::kind_from_proto(*k))
            {
                domain_kinds.push(kind);
            }
        }
        domain_kinds.sort_unstable();
        domain_kinds.dedup();
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(ApiError::invalid(v));
        };
        let limit = limit?;
        let codes: Vec<String> = domain_kinds.iter().map(|k| k.code().to_string()).collect();
        let scope = format!("events:k={}:{}", codes.join(","), id);
        let after = match PageToken::decode(&page_token, &scope, 2)? {
            None => None,
            Some(t) => {
                let bad = || {
                    ApiError::invalid_field(
                        Reason::InvalidPageToken,
                        "page_token",
                        "is not a valid page token",
                    )
                };
                let micros: i64 = t.position[0].parse().map_err(|_| bad())?;
                let event_id = EventId::parse(t.position[1].clone()).map_err(|_| bad())?;
                Some(EventCursor {
                    occurred_at: Timestamp::from_micros(micros),
                    event_id,
                })
            }
        };
        let mut events = self
            .store
            .list_events(&id, &domain_kinds, after.as_ref(), limit + 1)
            .await?;
        if events.is_empty() && after.is_none() {
            // An empty first page: tell "no such customer" from "no events yet".
            self.existing_customer(&id).await?;
        }
        let more = events.len() > limit;
        events.truncate(limit);
        let next_page_token = match (more, events.last()) {
            (true, Some(last)) => PageToken::encode(
                &scope,
                &[
                    &last.event.occurred_at.as_micros().to_string(),
                    last.event.event_id.as_str(),
                ],
            ),
            _ => String::new(),
        };
        Ok(pb::ListCustomerEventsResponse {
            events: events
                .iter()
                .map(|e| convert::event_to_proto(e, self.settings.currency))
                .collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    #[tracing::instrument(level = "debug", skip_all, fields(count = request.get_ref().customers.len()))]
    async fn upsert_customers(
        &self,
        request: Request<pb::UpsertCustomersRequest>,
    ) -> Result<Response<pb::UpsertCustomersResponse>, Status> {
        self.upsert_customers(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::GetCustomerResponse>, Status> {
        self.get_customer(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        self.list_customers(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeleteCustomerResponse>, Status> {
        self.delete_customer(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = request.get_ref().events.len()))]
    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Result<Response<pb::RecordEventsResponse>, Status> {
        self.record_events(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn stream_events(
        &self,
        request: Request<Streaming<pb::StreamEventsRequest>>,
    ) -> Result<Response<pb::StreamEventsResponse>, Status> {
        self.stream_events(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn list_customer_events(
        &self,
        request: Request<pb::ListCustomerEventsRequest>,
    ) -> Result<Response<pb::ListCustomerEventsResponse>, Status> {
        self.list_customer_events(request).await.respond()
    }
}

/// Counts stored and duplicate events (`patron_events_ingested_total{outcome}`).
fn ingested(out: &patron_store::RecordOutcome) {
    metrics::counter!("patron_events_ingested_total", "outcome" => "recorded")
        .increment(out.recorded as u64);
    metrics::counter!("patron_events_ingested_total", "outcome" => "duplicate")
        .increment(out.duplicate_indexes.len() as u64);
}
