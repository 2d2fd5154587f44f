//! `opsrunner tenants bind|list|unbind`: which tenant an application's login
//! role enqueues for.

use std::io::Write;

use anyhow::bail;

use super::{Ctx, TenantsCommand};
use crate::audit::operator_identity;

/// `opsrunner tenants …`.
pub async fn run(command: TenantsCommand, ctx: &Ctx, out: &mut impl Write) -> anyhow::Result<()> {
    let client = ctx.connect(true).await?;
    let by = operator_identity();
    match command {
        TenantsCommand::Bind { role, tenant } => {
            crate::tenants::bind(&client, &role, &tenant, &by).await?;
            writeln!(out, "{role}: bound to tenant {tenant}")?;
        }
        TenantsCommand::Unbind { role } => {
            if !crate::tenants::unbind(&client, &role, &by).await? {
                bail!("{role} is bound to no tenant");
            }
            writeln!(
                out,
                "{role}: unbound (its inserts are refused until bound again)"
            )?;
        }
        TenantsCommand::List { json } => {
            let all = crate::tenants::list(&client).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
            } else {
                writeln!(out, "{:<32} {:<24} bound", "role", "tenant")?;
                for b in all {
                    writeln!(
                        out,
                        "{:<32} {:<24} {} by {}",
                        b.role,
                        b.tenant,
                        b.bound_at.format("%Y-%m-%d %H:%M:%S"),
                        b.bound_by.unwrap_or_default()
                    )?;
                }
            }
        }
    }
    Ok(())
}
