//! sea-orm entities, one module per table. Only `store` uses these; the rest
//! of the server sees domain types.

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod organisations {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "organisations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod users {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(unique)]
        pub email: String,
        pub display_name: String,
        pub password_hash: String,
        pub disabled: bool,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod sites {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sites")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub name: String,
        pub timezone: String,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod memberships {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "memberships")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub user_id: Uuid,
        pub site_id: Option<Uuid>,
        pub role: String,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod agents {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub name: String,
        pub secret_hash: String,
        pub software: Option<String>,
        pub last_seen_at: Option<TimeDateTimeWithTimeZone>,
        pub last_acked_seq: Option<i64>,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod devices {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub agent_id: Uuid,
        pub key: String,
        pub label: Option<String>,
        pub profile: Option<String>,
        pub online: Option<bool>,
        pub last_ok_at: Option<TimeDateTimeWithTimeZone>,
        pub last_error: Option<String>,
        pub updated_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod points {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "points")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub device_id: Uuid,
        pub key: String,
        pub label: Option<String>,
        pub unit: String,
        pub kind: String,
        pub display_min: Option<f64>,
        pub display_max: Option<f64>,
        pub alarm: bool,
        pub position: i32,
    }
    no_relations!();
}

pub mod readings {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "readings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub point_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub ts_ms: i64,
        pub value: f64,
        pub quality: i16,
    }
    no_relations!();
}

pub mod agent_envelopes {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "agent_envelopes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        /// `protocol::Envelope` as JSON text.
        #[sea_orm(column_type = "Text")]
        pub envelope: String,
        pub received_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod control_settings {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "control_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub site_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub control_key: String,
        pub tenant_id: Uuid,
        pub band_min: Option<f64>,
        pub band_max: Option<f64>,
        pub homeowner_visible: bool,
        pub updated_by: Option<Uuid>,
        pub updated_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod commands {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "commands")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub agent_id: Uuid,
        pub control_key: String,
        pub op: String,
        /// `protocol::ControlRequest` as JSON text.
        #[sea_orm(column_type = "Text")]
        pub request: String,
        pub requested_by: Option<Uuid>,
        pub requested_by_name: String,
        pub issued_by: String,
        pub issued_at: TimeDateTimeWithTimeZone,
        pub expires_at: TimeDateTimeWithTimeZone,
        pub status: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub reason: Option<String>,
        pub outside_band: bool,
        pub value_before: Option<f64>,
        pub value_after: Option<f64>,
        pub delivered_at: Option<TimeDateTimeWithTimeZone>,
        pub result_at: Option<TimeDateTimeWithTimeZone>,
        pub updated_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod control_states {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "control_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agent_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub device: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub point: String,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub commanded: Option<f64>,
        pub reported: Option<f64>,
        pub source: String,
        pub until: Option<TimeDateTimeWithTimeZone>,
        pub action: Option<String>,
        pub updated_at: TimeDateTimeWithTimeZone,
        pub note: Option<String>,
    }
    no_relations!();
}

pub mod confirmations {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "confirmations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub site_id: Uuid,
        pub command_id: Uuid,
        pub user_id: Option<Uuid>,
        pub recipient_email: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub expires_at: TimeDateTimeWithTimeZone,
        pub used_at: Option<TimeDateTimeWithTimeZone>,
        pub created_at: TimeDateTimeWithTimeZone,
    }
    no_relations!();
}

pub mod audit_log {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub site_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub tenant_id: Uuid,
        pub at: TimeDateTimeWithTimeZone,
        pub actor_user_id: Option<Uuid>,
        pub actor_name: String,
        pub action: String,
        pub target: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub value_before: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub value_after: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub decision: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub result: String,
        pub command_id: Option<Uuid>,
        pub prev_hash: String,
        pub hash: String,
    }
    no_relations!();
}

pub mod audit_heads {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_heads")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub site_id: Uuid,
        pub tenant_id: Uuid,
        pub seq: i64,
        pub hash: String,
    }
    no_relations!();
}
