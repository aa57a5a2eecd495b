//! Prints the DataPipeline CustomResourceDefinition as YAML; `crds/` is generated from it.
fn main() -> anyhow::Result<()> {
    print!("{}", zeroflow_operator::api::crd_yaml()?);
    Ok(())
}
