//! A control state's note: the agent's own words on who switches a point
//! ("switched by the device's own clock table", "run by the agent: the
//! schedule needs 11 entries, the device's table holds 8"), shown next to
//! the "why" on the Controls page. Nullable text: older agents send none.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ControlStates {
    Table,
    Note,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ControlStates::Table)
                    .add_column(text_null(ControlStates::Note))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ControlStates::Table)
                    .drop_column(ControlStates::Note)
                    .to_owned(),
            )
            .await
    }
}
