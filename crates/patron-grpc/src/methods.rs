//! Every Patron RPC in one table: whether it writes, and the scope a caller needs. The consistency
//! layer answers a write only once this replica has applied it (and hands back its consistency
//! token); the authorization layer checks the scope. A test checks that every RPC of the
//! descriptor set has exactly one entry, so a new RPC cannot be forgotten.

/// What an RPC does to stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// May change stored state.
    Write,
}

/// One RPC: its path, whether it writes, and the scope a caller needs to call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// `/package.Service/Method`.
    pub path: &'static str,
    pub access: Access,
    /// The scope a credential must carry (e.g. `customers:write`).
    pub scope: &'static str,
}

/// Every scope a credential may carry, with what it allows.
pub const SCOPES: &[(&str, &str)] = &[
    ("customers:read", "read customers and their events"),
    (
        "customers:write",
        "upsert customers and record events (pipelines, imports)",
    ),
    ("customers:erase", "erase a customer (DeleteCustomer)"),
    (
        "scoring:read",
        "read value profiles, models and the tier policy; what-if scores",
    ),
    (
        "scoring:admin",
        "fit and activate value models, change the tier policy",
    ),
    (
        "segments:read",
        "read segments, membership, counts, members, watches",
    ),
    ("segments:write", "create, update and delete segments"),
    (
        "loyalty:read",
        "read programs, rewards, memberships, ledgers, eligibility",
    ),
    ("loyalty:enroll", "enrol customers in programs"),
    ("loyalty:redeem", "redeem rewards and cancel redemptions"),
    (
        "loyalty:admin",
        "create and change programs and rewards, adjust points",
    ),
];

/// Every Patron RPC by path, with its access and scope.
pub const METHODS: &[Method] = &[
    Method {
        path: "/patron.customers.v1.CustomerService/UpsertCustomers",
        access: Access::Write,
        scope: "customers:write",
    },
    Method {
        path: "/patron.customers.v1.CustomerService/GetCustomer",
        access: Access::Read,
        scope: "customers:read",
    },
    Method {
        path: "/patron.customers.v1.CustomerService/ListCustomers",
        access: Access::Read,
        scope: "customers:read",
    },
    Method {
        path: "/patron.customers.v1.CustomerService/DeleteCustomer",
        access: Access::Write,
        scope: "customers:erase",
    },
    Method {
        path: "/patron.customers.v1.CustomerService/RecordEvents",
        access: Access::Write,
        scope: "customers:write",
    },
    Method {
        path: "/patron.customers.v1.CustomerService/StreamEvents",
        access: Access::Write,
        scope: "customers:write",
    },
    Method {
        path: "/patron.customers.v1.CustomerService/ListCustomerEvents",
        access: Access::Read,
        scope: "customers:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/GetCustomerValue",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/BatchGetCustomerValues",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/StreamCustomerValues",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/FitValueModel",
        access: Access::Write,
        scope: "scoring:admin",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/GetValueModel",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/ListValueModels",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/ActivateValueModel",
        access: Access::Write,
        scope: "scoring:admin",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/GetTierPolicy",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/UpdateTierPolicy",
        access: Access::Write,
        scope: "scoring:admin",
    },
    Method {
        path: "/patron.scoring.v1.ScoringService/ScoreProfile",
        access: Access::Read,
        scope: "scoring:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/CreateSegment",
        access: Access::Write,
        scope: "segments:write",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/GetSegment",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/ListSegments",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/UpdateSegment",
        access: Access::Write,
        scope: "segments:write",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/DeleteSegment",
        access: Access::Write,
        scope: "segments:write",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/PreviewSegment",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/CheckMembership",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/ListCustomerSegments",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/ListSegmentMembers",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/CountSegmentMembers",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.segmentation.v1.SegmentationService/WatchSegment",
        access: Access::Read,
        scope: "segments:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/CreateProgram",
        access: Access::Write,
        scope: "loyalty:admin",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/GetProgram",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/ListPrograms",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/UpdateProgram",
        access: Access::Write,
        scope: "loyalty:admin",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/Enroll",
        access: Access::Write,
        scope: "loyalty:enroll",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/GetMembership",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/ListLedgerEntries",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/AdjustPoints",
        access: Access::Write,
        scope: "loyalty:admin",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/CreateReward",
        access: Access::Write,
        scope: "loyalty:admin",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/GetReward",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/ListRewards",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/UpdateReward",
        access: Access::Write,
        scope: "loyalty:admin",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/CheckEligibility",
        access: Access::Read,
        scope: "loyalty:read",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/RedeemReward",
        access: Access::Write,
        scope: "loyalty:redeem",
    },
    Method {
        path: "/patron.loyalty.v1.LoyaltyService/CancelRedemption",
        access: Access::Write,
        scope: "loyalty:redeem",
    },
];

/// The RPC at `path`; `None` for paths outside Patron's services (health, reflection).
pub fn method(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.path == path)
}

/// The access of the RPC at `path`; `None` for paths outside Patron's services.
pub fn access(path: &str) -> Option<Access> {
    method(path).map(|m| m.access)
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
                METHODS.iter().filter(|m| m.path == p).count(),
                1,
                "{p} needs one entry in METHODS"
            );
        }
        for m in METHODS {
            assert!(
                paths.iter().any(|p| p == m.path),
                "{} is not an RPC",
                m.path
            );
            assert!(
                SCOPES.iter().any(|(s, _)| *s == m.scope),
                "{}: unknown scope {}",
                m.path,
                m.scope
            );
        }
    }
}
