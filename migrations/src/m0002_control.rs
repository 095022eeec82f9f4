//! Remote control: the agents' envelopes, comfort bands, commands, the
//! points' control state, e-mailed confirmations and the hash-chained audit log.
//!
//! Design notes:
//! - JSON (an agent's envelope, a command's request) is stored as text that
//!   the server serialises itself, so both backends hold the same bytes.
//! - `control_key` names a control within a site: `<device>/<point>` for a
//!   writable point, `action:<name>` for a named action.
//! - `audit_log` is keyed by `(site_id, seq)`: one chain per site, `seq`
//!   counting from 1 without gaps. `audit_heads` holds each chain's newest
//!   `seq` and hash; appending updates it first, which serialises appends per
//!   site on both backends and lets verification notice a removed last entry.
//! - The audit log has no foreign key to `users`: removing a person must not
//!   remove (or break) the record of what they did. It keeps their name.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sites {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum AgentEnvelopes {
    Table,
    AgentId,
    TenantId,
    SiteId,
    Envelope,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum ControlSettings {
    Table,
    SiteId,
    ControlKey,
    TenantId,
    BandMin,
    BandMax,
    HomeownerVisible,
    UpdatedBy,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Commands {
    Table,
    Id,
    TenantId,
    SiteId,
    AgentId,
    ControlKey,
    Op,
    Request,
    RequestedBy,
    RequestedByName,
    IssuedBy,
    IssuedAt,
    ExpiresAt,
    Status,
    Reason,
    OutsideBand,
    ValueBefore,
    ValueAfter,
    DeliveredAt,
    ResultAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ControlStates {
    Table,
    AgentId,
    Device,
    Point,
    TenantId,
    SiteId,
    Commanded,
    Reported,
    Source,
    Until,
    Action,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Confirmations {
    Table,
    Id,
    TenantId,
    SiteId,
    CommandId,
    UserId,
    RecipientEmail,
    TokenHash,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    SiteId,
    Seq,
    TenantId,
    At,
    ActorUserId,
    ActorName,
    Action,
    Target,
    ValueBefore,
    ValueAfter,
    Decision,
    Result,
    CommandId,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditHeads {
    Table,
    SiteId,
    TenantId,
    Seq,
    Hash,
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
                    .table(AgentEnvelopes::Table)
                    .col(pk_uuid(AgentEnvelopes::AgentId))
                    .col(uuid(AgentEnvelopes::TenantId))
                    .col(uuid(AgentEnvelopes::SiteId))
                    .col(text(AgentEnvelopes::Envelope))
                    .col(timestamp_with_time_zone(AgentEnvelopes::ReceivedAt))
                    .foreign_key(&mut fk(
                        AgentEnvelopes::Table,
                        AgentEnvelopes::AgentId,
                        Agents::Table,
                        Agents::Id,
                    ))
                    .foreign_key(&mut fk(
                        AgentEnvelopes::Table,
                        AgentEnvelopes::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ControlSettings::Table)
                    .col(uuid(ControlSettings::SiteId))
                    .col(string(ControlSettings::ControlKey))
                    .col(uuid(ControlSettings::TenantId))
                    .col(double_null(ControlSettings::BandMin))
                    .col(double_null(ControlSettings::BandMax))
                    .col(boolean(ControlSettings::HomeownerVisible).default(true))
                    .col(uuid_null(ControlSettings::UpdatedBy))
                    .col(timestamp_with_time_zone(ControlSettings::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ControlSettings::SiteId)
                            .col(ControlSettings::ControlKey),
                    )
                    .foreign_key(&mut fk(
                        ControlSettings::Table,
                        ControlSettings::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Commands::Table)
                    .col(pk_uuid(Commands::Id))
                    .col(uuid(Commands::TenantId))
                    .col(uuid(Commands::SiteId))
                    .col(uuid(Commands::AgentId))
                    .col(string(Commands::ControlKey))
                    .col(string(Commands::Op))
                    .col(text(Commands::Request))
                    .col(uuid_null(Commands::RequestedBy))
                    .col(string(Commands::RequestedByName))
                    .col(string(Commands::IssuedBy))
                    .col(timestamp_with_time_zone(Commands::IssuedAt))
                    .col(timestamp_with_time_zone(Commands::ExpiresAt))
                    .col(string(Commands::Status))
                    .col(text_null(Commands::Reason))
                    .col(boolean(Commands::OutsideBand).default(false))
                    .col(double_null(Commands::ValueBefore))
                    .col(double_null(Commands::ValueAfter))
                    .col(timestamp_with_time_zone_null(Commands::DeliveredAt))
                    .col(timestamp_with_time_zone_null(Commands::ResultAt))
                    .col(timestamp_with_time_zone(Commands::UpdatedAt))
                    .foreign_key(&mut fk(
                        Commands::Table,
                        Commands::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .foreign_key(&mut fk(
                        Commands::Table,
                        Commands::AgentId,
                        Agents::Table,
                        Agents::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_commands_agent_status")
                    .table(Commands::Table)
                    .col(Commands::AgentId)
                    .col(Commands::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_commands_site_issued")
                    .table(Commands::Table)
                    .col(Commands::SiteId)
                    .col(Commands::IssuedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ControlStates::Table)
                    .col(uuid(ControlStates::AgentId))
                    .col(string(ControlStates::Device))
                    .col(string(ControlStates::Point))
                    .col(uuid(ControlStates::TenantId))
                    .col(uuid(ControlStates::SiteId))
                    .col(double_null(ControlStates::Commanded))
                    .col(double_null(ControlStates::Reported))
                    .col(string(ControlStates::Source))
                    .col(timestamp_with_time_zone_null(ControlStates::Until))
                    .col(string_null(ControlStates::Action))
                    .col(timestamp_with_time_zone(ControlStates::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(ControlStates::AgentId)
                            .col(ControlStates::Device)
                            .col(ControlStates::Point),
                    )
                    .foreign_key(&mut fk(
                        ControlStates::Table,
                        ControlStates::AgentId,
                        Agents::Table,
                        Agents::Id,
                    ))
                    .foreign_key(&mut fk(
                        ControlStates::Table,
                        ControlStates::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Confirmations::Table)
                    .col(pk_uuid(Confirmations::Id))
                    .col(uuid(Confirmations::TenantId))
                    .col(uuid(Confirmations::SiteId))
                    .col(uuid(Confirmations::CommandId))
                    .col(uuid_null(Confirmations::UserId))
                    .col(string(Confirmations::RecipientEmail))
                    .col(string_uniq(Confirmations::TokenHash))
                    .col(timestamp_with_time_zone(Confirmations::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Confirmations::UsedAt))
                    .col(timestamp_with_time_zone(Confirmations::CreatedAt))
                    .foreign_key(&mut fk(
                        Confirmations::Table,
                        Confirmations::CommandId,
                        Commands::Table,
                        Commands::Id,
                    ))
                    .foreign_key(&mut fk(
                        Confirmations::Table,
                        Confirmations::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(uuid(AuditLog::SiteId))
                    .col(big_integer(AuditLog::Seq))
                    .col(uuid(AuditLog::TenantId))
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(uuid_null(AuditLog::ActorUserId))
                    .col(string(AuditLog::ActorName))
                    .col(string(AuditLog::Action))
                    .col(string(AuditLog::Target))
                    .col(text_null(AuditLog::ValueBefore))
                    .col(text_null(AuditLog::ValueAfter))
                    .col(text_null(AuditLog::Decision))
                    .col(text(AuditLog::Result))
                    .col(uuid_null(AuditLog::CommandId))
                    .col(string(AuditLog::PrevHash))
                    .col(string(AuditLog::Hash))
                    .primary_key(Index::create().col(AuditLog::SiteId).col(AuditLog::Seq))
                    .foreign_key(&mut fk(
                        AuditLog::Table,
                        AuditLog::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditHeads::Table)
                    .col(pk_uuid(AuditHeads::SiteId))
                    .col(uuid(AuditHeads::TenantId))
                    .col(big_integer(AuditHeads::Seq))
                    .col(string(AuditHeads::Hash))
                    .foreign_key(&mut fk(
                        AuditHeads::Table,
                        AuditHeads::SiteId,
                        Sites::Table,
                        Sites::Id,
                    ))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditHeads::Table.into_iden(),
            AuditLog::Table.into_iden(),
            Confirmations::Table.into_iden(),
            ControlStates::Table.into_iden(),
            Commands::Table.into_iden(),
            ControlSettings::Table.into_iden(),
            AgentEnvelopes::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
