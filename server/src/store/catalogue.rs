//! Devices and points, as announced by each agent in its hello.

use std::collections::HashMap;

use protocol::{DeviceInfo, DeviceStatus, PointKind};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};

use super::{StoreError, entities::*, now, people::AgentRecord};
use crate::domain::{DeviceId, PointId, SiteRef, dashboard::PointMeta};

/// `(device key, point key)` → point id, for one agent.
pub type PointIndex = HashMap<(String, String), PointId>;

fn kind_str(k: PointKind) -> &'static str {
    match k {
        PointKind::Analog => "analog",
        PointKind::Binary => "binary",
    }
}

/// Insert or update the agent's devices and points from its hello and return
/// the index used to map incoming readings. Points that disappeared from the
/// agent's configuration are kept (their history stays visible).
pub async fn upsert(
    db: &impl ConnectionTrait,
    agent: &AgentRecord,
    devices: &[DeviceInfo],
) -> Result<PointIndex, StoreError> {
    let mut index = PointIndex::new();
    for dev in devices {
        let existing = devices::Entity::find()
            .filter(devices::Column::AgentId.eq(agent.id.0))
            .filter(devices::Column::Key.eq(dev.key.as_str()))
            .one(db)
            .await?;
        let device_id = match existing {
            Some(m) => {
                let id = m.id;
                let mut am: devices::ActiveModel = m.into();
                am.label = Set(dev.label.clone());
                am.profile = Set(dev.profile.clone());
                am.updated_at = Set(now());
                am.update(db).await?;
                DeviceId(id)
            }
            None => {
                let id = DeviceId::new();
                devices::ActiveModel {
                    id: Set(id.0),
                    tenant_id: Set(agent.site.tenant_id.0),
                    site_id: Set(agent.site.site_id.0),
                    agent_id: Set(agent.id.0),
                    key: Set(dev.key.clone()),
                    label: Set(dev.label.clone()),
                    profile: Set(dev.profile.clone()),
                    online: Set(None),
                    last_ok_at: Set(None),
                    last_error: Set(None),
                    updated_at: Set(now()),
                }
                .insert(db)
                .await?;
                id
            }
        };
        let known: HashMap<String, points::Model> = points::Entity::find()
            .filter(points::Column::DeviceId.eq(device_id.0))
            .all(db)
            .await?
            .into_iter()
            .map(|p| (p.key.clone(), p))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for (pos, p) in dev.points.iter().enumerate() {
            // A catalogue naming a point twice keeps the first: refusing the
            // whole hello would only make the agent reconnect forever.
            if !seen.insert(p.key.as_str()) {
                continue;
            }
            let position = i32::try_from(pos).unwrap_or(i32::MAX);
            let id = match known.get(&p.key) {
                Some(m) => {
                    let unchanged = m.label == p.label
                        && m.unit == p.unit
                        && m.kind == kind_str(p.kind)
                        && m.display_min == p.display_min
                        && m.display_max == p.display_max
                        && m.alarm == p.alarm
                        && m.position == position;
                    if !unchanged {
                        let mut am: points::ActiveModel = m.clone().into();
                        am.label = Set(p.label.clone());
                        am.unit = Set(p.unit.clone());
                        am.kind = Set(kind_str(p.kind).to_owned());
                        am.display_min = Set(p.display_min);
                        am.display_max = Set(p.display_max);
                        am.alarm = Set(p.alarm);
                        am.position = Set(position);
                        am.update(db).await?;
                    }
                    m.id
                }
                None => {
                    let am = points::ActiveModel {
                        id: sea_orm::NotSet,
                        tenant_id: Set(agent.site.tenant_id.0),
                        site_id: Set(agent.site.site_id.0),
                        device_id: Set(device_id.0),
                        key: Set(p.key.clone()),
                        label: Set(p.label.clone()),
                        unit: Set(p.unit.clone()),
                        kind: Set(kind_str(p.kind).to_owned()),
                        display_min: Set(p.display_min),
                        display_max: Set(p.display_max),
                        alarm: Set(p.alarm),
                        position: Set(position),
                    };
                    am.insert(db).await?.id
                }
            };
            index.insert((dev.key.clone(), p.key.clone()), PointId(id));
        }
    }
    Ok(index)
}

/// Record a device's communication state.
pub async fn set_device_status(
    db: &impl ConnectionTrait,
    agent: &AgentRecord,
    status: &DeviceStatus,
) -> Result<(), StoreError> {
    devices::Entity::update_many()
        .col_expr(devices::Column::Online, Expr::value(status.online))
        .col_expr(devices::Column::LastOkAt, Expr::value(status.last_ok))
        .col_expr(
            devices::Column::LastError,
            Expr::value(status.last_error.clone()),
        )
        .col_expr(devices::Column::UpdatedAt, Expr::value(now()))
        .filter(devices::Column::AgentId.eq(agent.id.0))
        .filter(devices::Column::Key.eq(status.device.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// The points of a site in display order (device, then catalogue position).
pub async fn points_of_site(
    db: &impl ConnectionTrait,
    site: SiteRef,
) -> Result<Vec<PointMeta>, StoreError> {
    let devs: HashMap<uuid::Uuid, String> = devices::Entity::find()
        .filter(devices::Column::TenantId.eq(site.tenant_id.0))
        .filter(devices::Column::SiteId.eq(site.site_id.0))
        .order_by_asc(devices::Column::Key)
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.id, d.key))
        .collect();
    let mut rows = points::Entity::find()
        .filter(points::Column::TenantId.eq(site.tenant_id.0))
        .filter(points::Column::SiteId.eq(site.site_id.0))
        .all(db)
        .await?;
    rows.sort_by(|a, b| {
        let da = devs.get(&a.device_id);
        let db_ = devs.get(&b.device_id);
        da.cmp(&db_).then(a.position.cmp(&b.position))
    });
    Ok(rows
        .into_iter()
        .map(|p| PointMeta {
            id: PointId(p.id),
            device_key: devs.get(&p.device_id).cloned().unwrap_or_default(),
            key: p.key,
            label: p.label,
            unit: p.unit,
            kind: if p.kind == "binary" {
                PointKind::Binary
            } else {
                PointKind::Analog
            },
            display_min: p.display_min,
            display_max: p.display_max,
            alarm: p.alarm,
        })
        .collect())
}
