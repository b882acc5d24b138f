//! Every Patron RPC in one table: whether it writes. The consistency layer answers a write only
//! once this replica has applied it (and hands back its consistency token); a test checks that
//! every RPC of the descriptor set has an entry, so a new RPC cannot be forgotten.

/// What an RPC does to stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// May change stored state.
    Write,
}

/// Every Patron RPC by path, with its access.
pub const METHODS: &[(&str, Access)] = &[
    (
        "/patron.customers.v1.CustomerService/UpsertCustomers",
        Access::Write,
    ),
    (
        "/patron.customers.v1.CustomerService/GetCustomer",
        Access::Read,
    ),
    (
        "/patron.customers.v1.CustomerService/ListCustomers",
        Access::Read,
    ),
    (
        "/patron.customers.v1.CustomerService/DeleteCustomer",
        Access::Write,
    ),
    (
        "/patron.customers.v1.CustomerService/RecordEvents",
        Access::Write,
    ),
    (
        "/patron.customers.v1.CustomerService/StreamEvents",
        Access::Write,
    ),
    (
        "/patron.customers.v1.CustomerService/ListCustomerEvents",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/GetCustomerValue",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/BatchGetCustomerValues",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/StreamCustomerValues",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/FitValueModel",
        Access::Write,
    ),
    (
        "/patron.scoring.v1.ScoringService/GetValueModel",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/ListValueModels",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/ActivateValueModel",
        Access::Write,
    ),
    (
        "/patron.scoring.v1.ScoringService/GetTierPolicy",
        Access::Read,
    ),
    (
        "/patron.scoring.v1.ScoringService/UpdateTierPolicy",
        Access::Write,
    ),
    (
        "/patron.scoring.v1.ScoringService/ScoreProfile",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/CreateSegment",
        Access::Write,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/GetSegment",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/ListSegments",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/UpdateSegment",
        Access::Write,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/DeleteSegment",
        Access::Write,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/PreviewSegment",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/CheckMembership",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/ListCustomerSegments",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/ListSegmentMembers",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/CountSegmentMembers",
        Access::Read,
    ),
    (
        "/patron.segmentation.v1.SegmentationService/WatchSegment",
        Access::Read,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/CreateProgram",
        Access::Write,
    ),
    ("/patron.loyalty.v1.LoyaltyService/GetProgram", Access::Read),
    (
        "/patron.loyalty.v1.LoyaltyService/ListPrograms",
        Access::Read,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/UpdateProgram",
        Access::Write,
    ),
    ("/patron.loyalty.v1.LoyaltyService/Enroll", Access::Write),
    (
        "/patron.loyalty.v1.LoyaltyService/GetMembership",
        Access::Read,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/ListLedgerEntries",
        Access::Read,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/AdjustPoints",
        Access::Write,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/CreateReward",
        Access::Write,
    ),
    ("/patron.loyalty.v1.LoyaltyService/GetReward", Access::Read),
    (
        "/patron.loyalty.v1.LoyaltyService/ListRewards",
        Access::Read,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/UpdateReward",
        Access::Write,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/CheckEligibility",
        Access::Read,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/RedeemReward",
        Access::Write,
    ),
    (
        "/patron.loyalty.v1.LoyaltyService/CancelRedemption",
        Access::Write,
    ),
];

/// The access of the RPC at `path`; `None` for paths outside Patron's services (health,
/// reflection).
pub fn access(path: &str) -> Option<Access> {
    METHODS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_rpc_has_exactly_one_entry() {
        let set = prost_types::FileDescriptorSet::decode(patron_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut paths = Vec::new();
        for file in set.file {
            let package = file.package.unwrap_or_default();
            if !package.starts_with("patron.") {
                continue;
            }
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for m in service.method {
                    paths.push(format!("/{package}.{name}/{}", m.name.unwrap_or_default()));
                }
            }
        }
        assert!(paths.len() >= 40, "read {} RPCs", paths.len());
        for p in &paths {
            assert_eq!(
                METHODS.iter().filter(|(m, _)| m == p).count(),
                1,
                "{p} needs one entry in METHODS"
            );
        }
        for (m, _) in METHODS {
            assert!(paths.iter().any(|p| p == m), "{m} is not an RPC");
        }
    }
}
