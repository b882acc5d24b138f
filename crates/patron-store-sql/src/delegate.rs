//! The store traits whose every method is shared, implemented for a backend in one line:
//! `patron_store_sql::loyalty_store!(SqliteStore, "sqlite");`. Each method gets its tracing span
//! (`store.<method>`, with the backend's `db.system`), then runs the shared [`crate::Sql`] code.

/// Implements `patron_store::loyalty::LoyaltyStore` for `$store` (a [`crate::Backend`]) with
/// the shared statements of [`crate::loyalty`]; `$system` is its `db.system` in spans.
#[macro_export]
macro_rules! loyalty_store {
    ($store:ty, $system:literal) => {
        #[$crate::__private::async_trait]
        impl ::patron_store::loyalty::LoyaltyStore for $store {
            #[$crate::__private::tracing::instrument(skip_all, name = "store.create_program", fields(db.system = $system, program_id = %record.program_id))]
            async fn create_program(
                &self,
                record: &::patron_store::loyalty::ProgramRecord,
            ) -> ::patron_store::StoreResult<::patron_store::loyalty::ProgramRecord> {
                $crate::Sql::<Self>::create_program(self, record).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.get_program", fields(db.system = $system, program_id = %id))]
            async fn get_program(
                &self,
                id: &str,
            ) -> ::patron_store::StoreResult<Option<::patron_store::loyalty::ProgramRecord>> {
                $crate::Sql::<Self>::get_program(self, id).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.list_programs", fields(db.system = $system, limit))]
            async fn list_programs(
                &self,
                after: Option<&str>,
                limit: usize,
            ) -> ::patron_store::StoreResult<Vec<::patron_store::loyalty::ProgramRecord>> {
                $crate::Sql::<Self>::list_programs(self, after, limit).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.update_program", fields(db.system = $system, program_id = %id, expected_revision))]
            async fn update_program(
                &self,
                id: &str,
                body: &str,
                target_segment: Option<&str>,
                now: ::patron_domain::Timestamp,
                expected_revision: Option<i64>,
            ) -> ::patron_store::StoreResult<Option<::patron_store::loyalty::ProgramRecord>> {
                $crate::Sql::<Self>::update_program(
                    self,
                    id,
                    body,
                    target_segment,
                    now,
                    expected_revision,
                )
                .await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.create_reward", fields(db.system = $system, reward_id = %record.reward_id))]
            async fn create_reward(
                &self,
                record: &::patron_store::loyalty::RewardRecord,
            ) -> ::patron_store::StoreResult<::patron_store::loyalty::RewardRecord> {
                $crate::Sql::<Self>::create_reward(self, record).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.get_reward", fields(db.system = $system, reward_id = %id))]
            async fn get_reward(
                &self,
                id: &str,
            ) -> ::patron_store::StoreResult<Option<::patron_store::loyalty::RewardRecord>> {
                $crate::Sql::<Self>::get_reward(self, id).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.list_rewards", fields(db.system = $system, program_id = %program_id, limit))]
            async fn list_rewards(
                &self,
                program_id: &str,
                after: Option<&str>,
                limit: usize,
            ) -> ::patron_store::StoreResult<Vec<::patron_store::loyalty::RewardRecord>> {
                $crate::Sql::<Self>::list_rewards(self, program_id, after, limit).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.update_reward", fields(db.system = $system, reward_id = %id, expected_revision))]
            async fn update_reward(
                &self,
                id: &str,
                body: &str,
                required_segment: Option<&str>,
                stock_remaining: Option<Option<i64>>,
                now: ::patron_domain::Timestamp,
                expected_revision: Option<i64>,
            ) -> ::patron_store::StoreResult<Option<::patron_store::loyalty::RewardRecord>> {
                $crate::Sql::<Self>::update_reward(
                    self,
                    id,
                    body,
                    required_segment,
                    stock_remaining,
                    now,
                    expected_revision,
                )
                .await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.mutate_member", fields(db.system = $system, program_id = %program_id, customer_id = %customer))]
            async fn mutate_member(
                &self,
                program_id: &str,
                customer: &::patron_domain::CustomerId,
                now: ::patron_domain::Timestamp,
                op: &dyn ::patron_store::loyalty::MemberOp,
            ) -> ::patron_store::StoreResult<::patron_store::loyalty::MutateOutcome> {
                $crate::Sql::<Self>::mutate_member(self, program_id, customer, now, op).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.get_member", fields(db.system = $system, program_id = %program_id, customer_id = %customer))]
            async fn get_member(
                &self,
                program_id: &str,
                customer: &::patron_domain::CustomerId,
            ) -> ::patron_store::StoreResult<Option<::patron_store::loyalty::MemberRow>> {
                $crate::Sql::<Self>::get_member(self, program_id, customer).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.scan_members", fields(db.system = $system, limit))]
            async fn scan_members(
                &self,
                after: Option<(&::patron_domain::CustomerId, &str)>,
                limit: usize,
            ) -> ::patron_store::StoreResult<
                Vec<(
                    ::patron_domain::CustomerId,
                    String,
                    ::patron_store::loyalty::MemberRow,
                )>,
            > {
                $crate::Sql::<Self>::scan_members(self, after, limit).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.member_programs", fields(db.system = $system, customer_id = %customer))]
            async fn member_programs(
                &self,
                customer: &::patron_domain::CustomerId,
            ) -> ::patron_store::StoreResult<Vec<String>> {
                $crate::Sql::<Self>::member_programs(self, customer).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.list_entries", fields(db.system = $system, program_id = %program_id, customer_id = %customer, limit))]
            async fn list_entries(
                &self,
                program_id: &str,
                customer: &::patron_domain::CustomerId,
                before: Option<i64>,
                limit: usize,
            ) -> ::patron_store::StoreResult<Vec<::patron_domain::loyalty::Entry>> {
                $crate::Sql::<Self>::list_entries(self, program_id, customer, before, limit).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.get_redemption", fields(db.system = $system, program_id = %program_id, customer_id = %customer))]
            async fn get_redemption(
                &self,
                program_id: &str,
                customer: &::patron_domain::CustomerId,
                redemption_id: &str,
            ) -> ::patron_store::StoreResult<Option<::patron_store::loyalty::RedemptionRecord>>
            {
                $crate::Sql::<Self>::get_redemption(self, program_id, customer, redemption_id)
                    .await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.completed_redemptions", fields(db.system = $system, program_id = %program_id, customer_id = %customer))]
            async fn completed_redemptions(
                &self,
                program_id: &str,
                customer: &::patron_domain::CustomerId,
            ) -> ::patron_store::StoreResult<::std::collections::HashMap<String, i64>> {
                $crate::Sql::<Self>::completed_redemptions(self, program_id, customer).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.members_to_settle", fields(db.system = $system, limit))]
            async fn members_to_settle(
                &self,
                now: ::patron_domain::Timestamp,
                after: Option<(&str, &::patron_domain::CustomerId)>,
                limit: usize,
            ) -> ::patron_store::StoreResult<Vec<(String, ::patron_domain::CustomerId)>> {
                $crate::Sql::<Self>::members_to_settle(self, now, after, limit).await
            }
        }
    };
}

/// Implements `patron_store::SegmentStore` for `$store` (a [`crate::Backend`]) with the shared
/// statements of [`crate::catalog`]; `$system` is its `db.system` in spans.
#[macro_export]
macro_rules! segment_store {
    ($store:ty, $system:literal) => {
        #[$crate::__private::async_trait]
        impl ::patron_store::SegmentStore for $store {
            #[$crate::__private::tracing::instrument(skip_all, name = "store.create_segment", fields(db.system = $system, segment_id = %record.segment_id))]
            async fn create_segment(
                &self,
                record: &::patron_store::SegmentRecord,
            ) -> ::patron_store::StoreResult<::patron_store::SegmentRecord> {
                $crate::Sql::<Self>::create_segment(self, record).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.get_segment", fields(db.system = $system, segment_id = %id))]
            async fn get_segment(
                &self,
                id: &str,
            ) -> ::patron_store::StoreResult<Option<::patron_store::SegmentRecord>> {
                $crate::Sql::<Self>::get_segment(self, id).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.list_segments", fields(db.system = $system, limit))]
            async fn list_segments(
                &self,
                after: Option<&str>,
                limit: usize,
            ) -> ::patron_store::StoreResult<Vec<::patron_store::SegmentRecord>> {
                $crate::Sql::<Self>::list_segments(self, after, limit).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.update_segment", fields(db.system = $system, segment_id = %record.segment_id, expected_revision))]
            async fn update_segment(
                &self,
                record: &::patron_store::SegmentRecord,
                expected_revision: Option<i64>,
            ) -> ::patron_store::StoreResult<Option<::patron_store::SegmentRecord>> {
                $crate::Sql::<Self>::update_segment(self, record, expected_revision).await
            }

            #[$crate::__private::tracing::instrument(skip_all, name = "store.delete_segment", fields(db.system = $system, segment_id = %id))]
            async fn delete_segment(&self, id: &str) -> ::patron_store::StoreResult<bool> {
                $crate::Sql::<Self>::delete_segment(self, id).await
            }
        }
    };
}
