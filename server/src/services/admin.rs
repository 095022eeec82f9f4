//! Operator tasks: set up organisations, people, sites and agents before the
//! installer portal exists. Used by the `server admin …` subcommands and the demo.

use sea_orm::ConnectionTrait;

use super::secrets;
use crate::{
    domain::{AgentId, Role, SiteId, SiteRef, TenantId, UserId},
    store::{StoreError, people},
};

/// Errors of admin tasks, worded for an operator at a terminal.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input, with the reason.
    #[error("{0}")]
    Invalid(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failure.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Minimum password length accepted for new users.
pub const MIN_PASSWORD_LEN: usize = 10;

/// Create a user after checking the e-mail and password.
pub async fn create_user(
    db: &impl ConnectionTrait,
    email: &str,
    display_name: &str,
    password: &str,
) -> Result<UserId, AdminError> {
    let email = email.trim();
    if !email.contains('@')
        || email.len() < 3
        || email.len() > 254
        || email.contains(char::is_whitespace)
    {
        return Err(AdminError::Invalid(format!(
            "'{email}' is not an e-mail address"
        )));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AdminError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let name = if display_name.trim().is_empty() {
        email
    } else {
        display_name.trim()
    };
    let hash = secrets::hash_password(password.to_owned()).await?;
    Ok(people::create_user(db, email, name, &hash).await?)
}

/// Resolve an organisation given by id or exact name.
pub async fn organisation(
    db: &impl ConnectionTrait,
    id_or_name: &str,
) -> Result<TenantId, AdminError> {
    if let Ok(id) = id_or_name.parse::<TenantId>() {
        return Ok(id);
    }
    people::find_organisation_by_name(db, id_or_name)
        .await?
        .map(|o| o.id)
        .ok_or_else(|| AdminError::Invalid(format!("no organisation named '{id_or_name}'")))
}

/// Grant a role; site roles need a site of the same organisation.
pub async fn add_member(
    db: &impl ConnectionTrait,
    tenant: TenantId,
    email: &str,
    role: Role,
    site: Option<SiteId>,
) -> Result<(), AdminError> {
    let user = people::find_user_by_email(db, email)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no user with e-mail '{email}'")))?;
    match (role.is_organisation_wide(), site) {
        (true, Some(_)) => {
            return Err(AdminError::Invalid(format!(
                "{} is an organisation-wide role; leave out --site",
                role.as_str()
            )));
        }
        (false, None) => {
            return Err(AdminError::Invalid(format!(
                "{} is a site role; give --site",
                role.as_str()
            )));
        }
        _ => {}
    }
    people::add_membership(db, tenant, user.id, site, role)
        .await
        .map_err(|e| match e {
            StoreError::Missing(what) => AdminError::Invalid(format!("no {what}")),
            other => other.into(),
        })
}

/// Register an agent and return its id and its secret. The secret is shown
/// only now; the server keeps only its hash.
pub async fn create_agent(
    db: &impl ConnectionTrait,
    site: SiteId,
    name: &str,
) -> Result<(AgentId, String), AdminError> {
    let summary = people::find_site(db, site)
        .await?
        .ok_or_else(|| AdminError::Invalid(format!("no site {site}")))?;
    let secret = secrets::new_agent_secret();
    let id =
        people::create_agent(db, summary.site, name, &secrets::hash_agent_secret(&secret)).await?;
    Ok((id, secret))
}

/// Credentials of one demo user.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// Role shown next to the login.
    pub role: Role,
    /// E-mail.
    pub email: String,
    /// Password (demo only).
    pub password: String,
}

/// What [`seed_demo`] created.
#[derive(Debug, Clone)]
pub struct DemoSeed {
    /// The demo house.
    pub site: SiteRef,
    /// Logins to print.
    pub logins: Vec<DemoLogin>,
}

/// Create the demo organisation, house and three users, unless an
/// organisation of that name exists already (a restarted demo). The caller
/// registers or reuses the house's agent.
pub async fn seed_demo(db: &impl ConnectionTrait) -> Result<DemoSeed, AdminError> {
    const ORG: &str = "Demo Lämpö Oy";
    let logins = vec![
        DemoLogin {
            role: Role::Installer,
            email: "installer@demo.homecontrol".into(),
            password: "installer-demo".into(),
        },
        DemoLogin {
            role: Role::Homeowner,
            email: "homeowner@demo.homecontrol".into(),
            password: "homeowner-demo".into(),
        },
        DemoLogin {
            role: Role::Technician,
            email: "technician@demo.homecontrol".into(),
            password: "technician-demo".into(),
        },
    ];
    if let Some(org) = people::find_organisation_by_name(db, ORG).await? {
        let memberships = people::memberships_of(
            db,
            people::find_user_by_email(db, &logins[1].email)
                .await?
                .ok_or_else(|| AdminError::Invalid("demo homeowner missing".into()))?
                .id,
        )
        .await?;
        let site_id = memberships
            .iter()
            .find(|m| m.tenant_id == org.id)
            .and_then(|m| m.site_id)
            .ok_or_else(|| AdminError::Invalid("demo house missing".into()))?;
        return Ok(DemoSeed {
            site: SiteRef {
                tenant_id: org.id,
                site_id,
            },
            logins,
        });
    }
    let org = people::create_organisation(db, ORG).await?;
    let site = people::create_site(
        db,
        org.id,
        "Demo house (Lämpöässä + EH-203)",
        "Europe/Helsinki",
    )
    .await?;
    for l in &logins {
        let name = format!("Demo {}", l.role.label().to_lowercase());
        create_user(db, &l.email, &name, &l.password).await?;
        let site_opt = (!l.role.is_organisation_wide()).then_some(site.site_id);
        add_member(db, org.id, &l.email, l.role, site_opt).await?;
    }
    Ok(DemoSeed { site, logins })
}
