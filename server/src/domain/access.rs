//! Who may see which site.
//!
//! Roles come in two scopes. An organisation-wide membership (no site) gives
//! access to every site of that organisation: installers and service
//! technicians. A site membership gives access to that one site: homeowners and
//! viewers (e.g. a wall tablet). Nothing else grants access; in particular,
//! belonging to organisation A says nothing about organisation B's sites.

use serde::{Deserialize, Serialize};

use super::ids::{SiteId, TenantId};

/// What a member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only live view (kiosk, wall tablet).
    Viewer,
    /// Lives in the house: sees everything of the site, changes comfort settings.
    Homeowner,
    /// Service company technician: all sites of the organisation.
    Technician,
    /// Organisation admin: creates sites and agents, invites people.
    Installer,
}

impl Role {
    /// All roles, least privileged first.
    pub const ALL: [Role; 4] = [
        Role::Viewer,
        Role::Homeowner,
        Role::Technician,
        Role::Installer,
    ];

    /// Stable name used in the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Homeowner => "homeowner",
            Role::Technician => "technician",
            Role::Installer => "installer",
        }
    }

    /// Human label for the UI.
    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "Viewer",
            Role::Homeowner => "Homeowner",
            Role::Technician => "Service technician",
            Role::Installer => "Installer",
        }
    }

    /// True for roles that are granted on a whole organisation rather than one site.
    pub fn is_organisation_wide(self) -> bool {
        matches!(self, Role::Technician | Role::Installer)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role '{s}' (expected viewer, homeowner, technician or installer)")
            })
    }
}

/// One membership of a user, as the access rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The organisation the membership belongs to.
    pub tenant_id: TenantId,
    /// `None` for organisation-wide memberships.
    pub site_id: Option<SiteId>,
    /// The role granted.
    pub role: Role,
}

/// The identity of a site for access decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteRef {
    /// Owning organisation.
    pub tenant_id: TenantId,
    /// The site.
    pub site_id: SiteId,
}

/// The strongest role `memberships` grant on `site`, or `None` (no access).
pub fn role_on_site(memberships: &[Membership], site: SiteRef) -> Option<Role> {
    memberships
        .iter()
        .filter(|m| m.tenant_id == site.tenant_id)
        .filter(|m| match m.site_id {
            None => m.role.is_organisation_wide(),
            Some(s) => s == site.site_id,
        })
        .map(|m| m.role)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> SiteRef {
        SiteRef {
            tenant_id: TenantId::new(),
            site_id: SiteId::new(),
        }
    }

    #[test]
    fn homeowner_of_site_a_has_no_role_on_site_b_of_the_same_organisation() {
        let a = site();
        let b = SiteRef {
            tenant_id: a.tenant_id,
            site_id: SiteId::new(),
        };
        let m = [Membership {
            tenant_id: a.tenant_id,
            site_id: Some(a.site_id),
            role: Role::Homeowner,
        }];
        assert_eq!(role_on_site(&m, a), Some(Role::Homeowner));
        assert_eq!(role_on_site(&m, b), None);
    }

    #[test]
    fn technician_sees_every_site_of_the_company_but_not_of_another() {
        let a = site();
        let other_company = site();
        let m = [Membership {
            tenant_id: a.tenant_id,
            site_id: None,
            role: Role::Technician,
        }];
        assert_eq!(role_on_site(&m, a), Some(Role::Technician));
        assert_eq!(role_on_site(&m, other_company), None);
    }

    #[test]
    fn a_site_role_without_a_site_grants_nothing() {
        let a = site();
        let m = [Membership {
            tenant_id: a.tenant_id,
            site_id: None,
            role: Role::Homeowner,
        }];
        assert_eq!(role_on_site(&m, a), None);
    }

    #[test]
    fn a_forged_site_id_under_the_wrong_tenant_grants_nothing() {
        let a = site();
        let m = [Membership {
            tenant_id: TenantId::new(),
            site_id: Some(a.site_id),
            role: Role::Homeowner,
        }];
        assert_eq!(role_on_site(&m, a), None);
    }

    #[test]
    fn the_strongest_role_wins() {
        let a = site();
        let m = [
            Membership {
                tenant_id: a.tenant_id,
                site_id: Some(a.site_id),
                role: Role::Viewer,
            },
            Membership {
                tenant_id: a.tenant_id,
                site_id: None,
                role: Role::Installer,
            },
        ];
        assert_eq!(role_on_site(&m, a), Some(Role::Installer));
    }

    #[test]
    fn role_names_round_trip_and_unknown_names_are_refused() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("admin".parse::<Role>().is_err());
    }
}
