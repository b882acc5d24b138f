//! The one place that says what the shared code needs of a database: that its connections
//! execute statements, that the values the statements bind encode, and that the rows they read
//! decode. Both sqlx drivers meet it; the compiler checks that where a backend names [`Sql`].

use std::marker::PhantomData;

/// The shared statement sequences of backend `B` (see [`crate::loyalty`], [`crate::catalog`], [`crate::feed`]).
#[derive(Debug)]
pub struct Sql<B>(PhantomData<B>);

/// Declares an `impl<B: Backend> Sql<B>` block with the bounds the shared code needs.
macro_rules! shared_impl {
    ($($body:tt)*) => {
        impl<B: $crate::Backend> $crate::Sql<B>
        where
            for<'c> &'c mut $crate::Conn<B>: sqlx::Executor<'c, Database = B::Db>,
            for<'c> &'c sqlx::Pool<B::Db>: sqlx::Executor<'c, Database = B::Db>,
            for<'q> <B::Db as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, B::Db>,
            for<'q> &'q str: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> Option<&'q str>: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> String: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> i64: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> Option<i64>: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> i32: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> Option<i32>: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'q> bool: sqlx::Encode<'q, B::Db> + sqlx::Type<B::Db>,
            for<'r> (i64,): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> (Option<i64>,): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> (String,): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> (String, i64): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> (String, String): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> (i64, bool): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> (i64, i64): sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::ProgramRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::RewardRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::EntryRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::RedemptionRow:
                sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::MemberDbRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::MemberKeyRow:
                sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::LotRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::ActivityRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::OrderRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::ModelRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::PolicyRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::ChangeRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::HeadRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::EventRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
            for<'r> $crate::rows::SegmentRow: sqlx::FromRow<'r, <B::Db as sqlx::Database>::Row>,
        {
            $($body)*
        }
    };
}
pub(crate) use shared_impl;
