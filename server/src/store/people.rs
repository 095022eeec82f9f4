//! Organisations, users, memberships, sites and agents.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};

use super::{StoreError, entities::*, now};
use crate::domain::{AgentId, Membership, Role, SiteId, SiteRef, TenantId, UserId};

/// An organisation row.
#[derive(Debug, Clone, PartialEq)]
pub struct Organisation {
    /// Id.
    pub id: TenantId,
    /// Name.
    pub name: String,
}

/// A user as the auth code needs it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// Id.
    pub id: UserId,
    /// Lower-cased e-mail.
    pub email: String,
    /// Shown name.
    pub display_name: String,
    /// PHC-formatted argon2id hash.
    pub password_hash: String,
    /// Disabled users cannot log in.
    pub disabled: bool,
}

/// A site with the name of its organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSummary {
    /// Tenant + site ids.
    pub site: SiteRef,
    /// Site name.
    pub name: String,
    /// Owning organisation's name.
    pub organisation: String,
    /// IANA time zone of the site.
    pub timezone: String,
}

/// An agent's credentials and placement.
#[derive(Debug, Clone)]
pub struct AgentRecord {
    /// Id.
    pub id: AgentId,
    /// Where it belongs.
    pub site: SiteRef,
    /// Name given at provisioning.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    /// Highest committed batch seq.
    pub last_acked_seq: Option<u64>,
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Create an organisation.
pub async fn create_organisation(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Organisation, StoreError> {
    let id = TenantId::new();
    organisations::ActiveModel {
        id: Set(id.0),
        name: Set(name.to_owned()),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(Organisation {
        id,
        name: name.to_owned(),
    })
}

/// Find organisations by exact name.
pub async fn find_organisation_by_name(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<Organisation>, StoreError> {
    Ok(organisations::Entity::find()
        .filter(organisations::Column::Name.eq(name))
        .one(db)
        .await?
        .map(|m| Organisation {
            id: TenantId(m.id),
            name: m.name,
        }))
}

/// Create a user; `email` is stored lower-cased and must be unique.
pub async fn create_user(
    db: &impl ConnectionTrait,
    email: &str,
    display_name: &str,
    password_hash: &str,
) -> Result<UserId, StoreError> {
    let id = UserId::new();
    let email = email.trim().to_lowercase();
    users::ActiveModel {
        id: Set(id.0),
        email: Set(email.clone()),
        display_name: Set(display_name.to_owned()),
        password_hash: Set(password_hash.to_owned()),
        disabled: Set(false),
        created_at: Set(now()),
    }
    .insert(db)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Duplicate(format!("user {email}"))
        } else {
            e.into()
        }
    })?;
    Ok(id)
}

/// Look a user up by e-mail (case-insensitive).
pub async fn find_user_by_email(
    db: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let email = email.trim().to_lowercase();
    Ok(users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .one(db)
        .await?
        .map(user_record))
}

/// Look a user up by id.
pub async fn find_user(
    db: &impl ConnectionTrait,
    id: UserId,
) -> Result<Option<UserRecord>, StoreError> {
    Ok(users::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .map(user_record))
}

fn user_record(m: users::Model) -> UserRecord {
    UserRecord {
        id: UserId(m.id),
        email: m.email,
        display_name: m.display_name,
        password_hash: m.password_hash,
        disabled: m.disabled,
    }
}

/// Grant `role` to a user in an organisation, optionally on one site.
/// Organisation-wide roles must not name a site and site roles must.
pub async fn add_membership(
    db: &impl ConnectionTrait,
    tenant: TenantId,
    user: UserId,
    site: Option<SiteId>,
    role: Role,
) -> Result<(), StoreError> {
    if let Some(site_id) = site {
        // The site must belong to the same organisation: a membership can never
        // bridge two tenants.
        let found = sites::Entity::find_by_id(site_id.0)
            .filter(sites::Column::TenantId.eq(tenant.0))
            .one(db)
            .await?;
        if found.is_none() {
            return Err(StoreError::Missing(format!(
                "site {site_id} in this organisation"
            )));
        }
    }
    memberships::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant.0),
        user_id: Set(user.0),
        site_id: Set(site.map(|s| s.0)),
        role: Set(role.as_str().to_owned()),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Every membership of a user. Rows with an unknown role are skipped.
pub async fn memberships_of(
    db: &impl ConnectionTrait,
    user: UserId,
) -> Result<Vec<Membership>, StoreError> {
    let rows = memberships::Entity::find()
        .filter(memberships::Column::UserId.eq(user.0))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|m| {
            let role = m.role.parse::<Role>().ok()?;
            Some(Membership {
                tenant_id: TenantId(m.tenant_id),
                site_id: m.site_id.map(SiteId),
                role,
            })
        })
        .collect())
}

/// Create a site in an organisation.
pub async fn create_site(
    db: &impl ConnectionTrait,
    tenant: TenantId,
    name: &str,
    timezone: &str,
) -> Result<SiteRef, StoreError> {
    let id = SiteId::new();
    sites::ActiveModel {
        id: Set(id.0),
        tenant_id: Set(tenant.0),
        name: Set(name.to_owned()),
        timezone: Set(timezone.to_owned()),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(SiteRef {
        tenant_id: tenant,
        site_id: id,
    })
}

/// A site by id, with its organisation (unscoped: callers check access with
/// [`crate::domain::access::role_on_site`] before showing anything).
pub async fn find_site(
    db: &impl ConnectionTrait,
    id: SiteId,
) -> Result<Option<SiteSummary>, StoreError> {
    let Some(site) = sites::Entity::find_by_id(id.0).one(db).await? else {
        return Ok(None);
    };
    let org = organisations::Entity::find_by_id(site.tenant_id)
        .one(db)
        .await?;
    Ok(Some(SiteSummary {
        site: SiteRef {
            tenant_id: TenantId(site.tenant_id),
            site_id: SiteId(site.id),
        },
        name: site.name,
        organisation: org.map(|o| o.name).unwrap_or_default(),
        timezone: site.timezone,
    }))
}

/// Every site the given memberships reach, ordered by name.
pub async fn sites_visible_to(
    db: &impl ConnectionTrait,
    memberships: &[Membership],
) -> Result<Vec<SiteSummary>, StoreError> {
    let org_wide: Vec<uuid::Uuid> = memberships
        .iter()
        .filter(|m| m.site_id.is_none() && m.role.is_organisation_wide())
        .map(|m| m.tenant_id.0)
        .collect();
    let explicit: Vec<uuid::Uuid> = memberships
        .iter()
        .filter_map(|m| m.site_id.map(|s| s.0))
        .collect();
    if org_wide.is_empty() && explicit.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sites::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(sites::Column::TenantId.is_in(org_wide))
                .add(sites::Column::Id.is_in(explicit)),
        )
        .order_by_asc(sites::Column::Name)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for site in rows {
        let site_ref = SiteRef {
            tenant_id: TenantId(site.tenant_id),
            site_id: SiteId(site.id),
        };
        // Re-check with the pure rule so a site-scoped membership that names a
        // site of another tenant can never leak it.
        if crate::domain::access::role_on_site(memberships, site_ref).is_none() {
            continue;
        }
        let org = organisations::Entity::find_by_id(site.tenant_id)
            .one(db)
            .await?;
        out.push(SiteSummary {
            site: site_ref,
            name: site.name,
            organisation: org.map(|o| o.name).unwrap_or_default(),
            timezone: site.timezone,
        });
    }
    Ok(out)
}

/// Register an agent for a site; the caller has hashed the secret.
pub async fn create_agent(
    db: &impl ConnectionTrait,
    site: SiteRef,
    name: &str,
    secret_hash: &str,
) -> Result<AgentId, StoreError> {
    let id = AgentId::new();
    agents::ActiveModel {
        id: Set(id.0),
        tenant_id: Set(site.tenant_id.0),
        site_id: Set(site.site_id.0),
        name: Set(name.to_owned()),
        secret_hash: Set(secret_hash.to_owned()),
        software: Set(None),
        last_seen_at: Set(None),
        last_acked_seq: Set(None),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    Ok(id)
}

/// An agent by id.
pub async fn find_agent(
    db: &impl ConnectionTrait,
    id: AgentId,
) -> Result<Option<AgentRecord>, StoreError> {
    Ok(agents::Entity::find_by_id(id.0)
        .one(db)
        .await?
        .map(|m| AgentRecord {
            id: AgentId(m.id),
            site: SiteRef {
                tenant_id: TenantId(m.tenant_id),
                site_id: SiteId(m.site_id),
            },
            name: m.name,
            secret_hash: m.secret_hash,
            last_acked_seq: m.last_acked_seq.and_then(|s| u64::try_from(s).ok()),
        }))
}

/// Record that the agent connected (software version, time).
pub async fn touch_agent(
    db: &impl ConnectionTrait,
    id: AgentId,
    software: Option<&str>,
) -> Result<(), StoreError> {
    agents::Entity::update_many()
        .col_expr(agents::Column::LastSeenAt, Expr::value(now()))
        .col_expr(
            agents::Column::Software,
            Expr::value(software.map(str::to_owned)),
        )
        .filter(agents::Column::Id.eq(id.0))
        .exec(db)
        .await?;
    Ok(())
}

/// Every agent of a site.
pub async fn agents_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<Vec<AgentRecord>, StoreError> {
    let rows = agents::Entity::find()
        .filter(agents::Column::TenantId.eq(site.tenant_id.0))
        .filter(agents::Column::SiteId.eq(site.site_id.0))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|m| AgentRecord {
            id: AgentId(m.id),
            site,
            name: m.name,
            secret_hash: m.secret_hash,
            last_acked_seq: m.last_acked_seq.and_then(|s| u64::try_from(s).ok()),
        })
        .collect())
}

/// A person to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Id.
    pub id: UserId,
    /// E-mail.
    pub email: String,
    /// Shown name.
    pub display_name: String,
}

/// The enabled homeowners of a site (the site's owners, who confirm changes
/// outside the comfort band).
pub async fn homeowners_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<Vec<Contact>, StoreError> {
    let rows = memberships::Entity::find()
        .filter(memberships::Column::TenantId.eq(site.tenant_id.0))
        .filter(memberships::Column::SiteId.eq(site.site_id.0))
        .filter(memberships::Column::Role.eq(Role::Homeowner.as_str()))
        .all(db)
        .await?;
    let mut out: Vec<Contact> = Vec::new();
    for m in rows {
        if out.iter().any(|c| c.id.0 == m.user_id) {
            continue;
        }
        if let Some(u) = users::Entity::find_by_id(m.user_id).one(db).await?
            && !u.disabled
        {
            out.push(Contact {
                id: UserId(u.id),
                email: u.email,
                display_name: u.display_name,
            });
        }
    }
    out.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(out)
}
