//! Tenants, people, sites, agents, the device/point catalogue and readings.
//!
//! Design notes:
//! - Every tenant-owned row carries `tenant_id` (the organisation), so the
//!   store can scope every query in one place.
//! - `points.id` is a 64-bit integer rather than a UUID because it is repeated
//!   in every reading row; that keeps a reading near 40 bytes of payload.
//! - `readings` is keyed by `(point_id, ts_ms)`: that key is the history index
//!   and also what makes a re-sent batch idempotent (insert-or-ignore).
//! - Reading time is `ts_ms`, milliseconds since the Unix epoch (UTC), an
//!   integer on both backends: compact, fast to range-scan, unambiguous.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    DisplayName,
    PasswordHash,
    Disabled,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sites {
    Table,
    Id,
    TenantId,
    Name,
    Timezone,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Id,
    TenantId,
    UserId,
    SiteId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    TenantId,
    SiteId,
    Name,
    SecretHash,
    Software,
    LastSeenAt,
    LastAckedSeq,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    TenantId,
    SiteId,
    AgentId,
    Key,
    Label,
    Profile,
    Online,
    LastOkAt,
    LastError,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Points {
    Table,
    Id,
    TenantId,
    SiteId,
    DeviceId,
    Key,
    Label,
    Unit,
    Kind,
    DisplayMin,
    DisplayMax,
    Alarm,
    Position,
}

#[derive(DeriveIden)]
enum Readings {
    Table,
    PointId,
    TsMs,
    Value,
    Quality,
}

fn fk(
    from_table: impl IntoIden,
    from_col: impl IntoIden,
    to_table: impl IntoIden,
    to_col: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, from_col)
        .to(to_table, to_col)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organisations::Table)
                    .col(pk_uuid(Organisations::Id))
                    .col(string(Organisations::Name))
                    .col(timestamp_with_time_zone(Organisations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(pk_uuid(Users::Id))
                    .col(string_uniq(Users::Email))
                    .col(string(Users::DisplayName))
                    .col(string(Users::PasswordHash))
                    .col(boolean(Users::Disabled).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sites::Table)
                    .col(pk_uuid(Sites::Id))
                    .col(uuid(Sites::TenantId))
                    .col(string(Sites::Name))
                    .col(string(Sites::Timezone))
                    .col(timestamp_with_time_zone(Sites::CreatedAt))
                    .foreign_key(&mut fk(
                        Sites::Table,
                        Sites::TenantId,
                        Organisations::Table,
                        Organisations::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(pk_uuid(Memberships::Id))
                    .col(uuid(Memberships::TenantId))
                    .col(uuid(Memberships::UserId))
                    .col(uuid_null(Memberships::SiteId))
                    .col(string(Memberships::Role))
                    .col(timestamp_with_time_zone(Memberships::CreatedAt))
                    .foreign_key(&mut fk(
                        Memberships::Table,
                        Memberships::TenantId,
                        Organisations::Table,
                        Organisations::Id,
                    ))
                    .foreign_key(&mut fk(
                        Memberships::Table,
                        Memberships::UserId,
                        Users::Table,
                        Users::Id,
                    ))
                    .foreign_key(&mut fk(
                        Memberships::Table,
                        Memberships::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_memberships_user")
                    .table(Memberships::Table)
                    .col(Memberships::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(pk_uuid(Agents::Id))
                    .col(uuid(Agents::TenantId))
                    .col(uuid(Agents::SiteId))
                    .col(string(Agents::Name))
                    .col(string(Agents::SecretHash))
                    .col(string_null(Agents::Software))
                    .col(timestamp_with_time_zone_null(Agents::LastSeenAt))
                    .col(big_integer_null(Agents::LastAckedSeq))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .foreign_key(&mut fk(
                        Agents::Table,
                        Agents::TenantId,
                        Organisations::Table,
                        Organisations::Id,
                    ))
                    .foreign_key(&mut fk(
                        Agents::Table,
                        Agents::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .col(pk_uuid(Devices::Id))
                    .col(uuid(Devices::TenantId))
                    .col(uuid(Devices::SiteId))
                    .col(uuid(Devices::AgentId))
                    .col(string(Devices::Key))
                    .col(string_null(Devices::Label))
                    .col(string_null(Devices::Profile))
                    .col(boolean_null(Devices::Online))
                    .col(timestamp_with_time_zone_null(Devices::LastOkAt))
                    .col(string_null(Devices::LastError))
                    .col(timestamp_with_time_zone(Devices::UpdatedAt))
                    .foreign_key(&mut fk(
                        Devices::Table,
                        Devices::AgentId,
                        Agents::Table,
                        Agents::Id,
                    ))
                    .foreign_key(&mut fk(
                        Devices::Table,
                        Devices::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_devices_agent_key")
                    .table(Devices::Table)
                    .col(Devices::AgentId)
                    .col(Devices::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Points::Table)
                    .col(big_pk_auto(Points::Id))
                    .col(uuid(Points::TenantId))
                    .col(uuid(Points::SiteId))
                    .col(uuid(Points::DeviceId))
                    .col(string(Points::Key))
                    .col(string_null(Points::Label))
                    .col(string(Points::Unit))
                    .col(string(Points::Kind))
                    .col(double_null(Points::DisplayMin))
                    .col(double_null(Points::DisplayMax))
                    .col(boolean(Points::Alarm).default(false))
                    .col(integer(Points::Position))
                    .foreign_key(&mut fk(
                        Points::Table,
                        Points::DeviceId,
                        Devices::Table,
                        Devices::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_points_device_key")
                    .table(Points::Table)
                    .col(Points::DeviceId)
                    .col(Points::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_points_site")
                    .table(Points::Table)
                    .col(Points::SiteId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Readings::Table)
                    .col(big_integer(Readings::PointId))
                    .col(big_integer(Readings::TsMs))
                    .col(double(Readings::Value))
                    .col(small_integer(Readings::Quality))
                    .primary_key(Index::create().col(Readings::PointId).col(Readings::TsMs))
                    .foreign_key(&mut fk(
                        Readings::Table,
                        Readings::PointId,
                        Points::Table,
                        Points::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Readings::Table.into_iden(),
            Points::Table.into_iden(),
            Devices::Table.into_iden(),
            Agents::Table.into_iden(),
            Memberships::Table.into_iden(),
            Sites::Table.into_iden(),
            Users::Table.into_iden(),
            Organisations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
