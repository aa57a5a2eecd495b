//! Every sender's event names, sorted into the four [`EventKind`]s. Pure tables.
//!
//! The trap this module exists for: a store's "created" is not always "new bytes". MinIO names
//! every write to an object `s3:ObjectCreated:*`, tag, retention and legal-hold changes included
//! (`PutTagging`, `DeleteTagging`, `PutRetention`, `PutLegalHold`; minio/minio#11366), and the
//! usual `mc event add ... --event put` subscribes to all of them. Treating those as content
//! wakes pipelines at zero and, once the in-memory "recently finished" set has forgotten the
//! object, runs the transform again on unchanged bytes; a transform that tags its own input
//! loops. The names below come from the senders' documentation and source:
//!
//! - AWS S3 (notification-how-to-event-types-and-destinations): `ObjectCreated:*`,
//!   `ObjectRemoved:*`, `ObjectRestore:{Post,Completed,Delete}`, `ReducedRedundancyLostObject`,
//!   `Replication:*`, `LifecycleExpiration:*`, `LifecycleTransition`, `IntelligentTiering`,
//!   `ObjectTagging:{Put,Delete}`, `ObjectAcl:Put`; records carry them without the `s3:` prefix.
//! - MinIO (internal/event/name.go): the `ObjectCreated` subtypes above, `ObjectRemoved:{Delete,
//!   DeleteMarkerCreated,DeleteAllVersions,NoOP}`, `ObjectAccessed:*`, `ObjectRestore:*`,
//!   `ObjectTransition:*`, `Replication:*`, `Scanner:*`, `ILM:*`, bucket events; with `s3:`.
//! - Ceph RGW (rgw_notify_event_type.cc, s3-notification-compatibility.rst): the AWS names
//!   plus `ObjectLifecycle:Expiration:{Current,Noncurrent,DeleteMarker,AbortMPU}`,
//!   `ObjectLifecycle:Transition:{Current,Noncurrent}`, `ObjectSynced:{Create,Delete,
//!   DeletionMarkerCreated}` and their `Replication:{Create,Delete,...}` aliases; without `s3:`
//!   since Pacific, with it in older releases and in its POSIX and NSFS drivers.
//! - EventBridge's `detail-type`s for S3 (EventBridge.md): `Object Created`, `Object Deleted`,
//!   `Object Restore {Initiated,Completed,Expired}`, `Object Tags {Added,Deleted}`,
//!   `Object ACL Updated`, `Object Storage Class Changed`, `Object Access Tier Changed`.
//!
//! Unknown `ObjectCreated:*` subtypes count as content: losing an upload is worse than a
//! duplicate, and the work API checks the ledger before leasing anything.

use super::EventKind;

/// The kind of an S3-style event name (`s3:ObjectCreated:Put`, `ObjectCreated:Put`, ...).
pub fn s3_kind(name: &str) -> EventKind {
    let bare = name.strip_prefix("s3:").unwrap_or(name);
    let metadata = || EventKind::Metadata(bare.to_owned());
    let other = || EventKind::Other(bare.to_owned());
    let Some((family, subtype)) = bare.split_once(':') else {
        return match bare {
            // AWS and Ceph: the object moved to another storage class; MinIO-style tiering too.
            "LifecycleTransition" | "IntelligentTiering" => metadata(),
            _ => other(),
        };
    };
    match family {
        "ObjectCreated" if is_metadata_write(subtype) => metadata(),
        "ObjectCreated" => EventKind::Created,
        "ObjectRemoved" | "LifecycleExpiration" => EventKind::Removed,
        // Ceph: `ObjectLifecycle:Expiration:*` removes the object, except the abort of a
        // multipart upload, which never was one; `ObjectLifecycle:Transition:*` only moves it.
        "ObjectLifecycle" if subtype.starts_with("Expiration:Abort") => other(),
        "ObjectLifecycle" if subtype.starts_with("Expiration") => EventKind::Removed,
        "ObjectLifecycle" if subtype.starts_with("Transition") => metadata(),
        // Ceph multisite: the object's bytes arrived in (or left) this zone. New content here;
        // a duplicate of the origin zone's event is caught by the ledger.
        "ObjectSynced" | "Replication" if subtype == "Create" => EventKind::Created,
        "ObjectSynced" | "Replication" if subtype == "Delete" || subtype.starts_with("Deletion") => EventKind::Removed,
        "ObjectTagging" | "ObjectAcl" | "ObjectRestore" | "ObjectTransition" => metadata(),
        // Reads, AWS replication status, MinIO's scanner and ILM reports, bucket events,
        // `TestEvent`, and whatever a sender invents next.
        _ => other(),
    }
}

/// `ObjectCreated` subtypes that only rewrite metadata: MinIO's `PutTagging`, `DeleteTagging`,
/// `PutRetention`, `PutLegalHold`, and the same operations under the S3 API's own names
/// (`PutObjectTagging`, `PutObjectRetention`, `PutObjectLegalHold`, `PutObjectAcl`) that other
/// MinIO-compatible servers may use.
fn is_metadata_write(subtype: &str) -> bool {
    ["Tagging", "Retention", "LegalHold", "Acl", "ACL"].iter().any(|word| subtype.contains(word))
}

/// The kind of an EventBridge `detail-type` of `source: aws.s3`.
pub fn eventbridge_kind(detail_type: &str) -> EventKind {
    match detail_type {
        "Object Created" => EventKind::Created,
        "Object Deleted" => EventKind::Removed,
        "Object Restore Initiated"
        | "Object Restore Completed"
        | "Object Restore Expired"
        | "Object Tags Added"
        | "Object Tags Deleted"
        | "Object ACL Updated"
        | "Object Storage Class Changed"
        | "Object Access Tier Changed" => EventKind::Metadata(detail_type.to_owned()),
        other => EventKind::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(name: &str) -> &'static str {
        match s3_kind(name) {
            EventKind::Created => "content",
            EventKind::Removed => "removal",
            EventKind::Metadata(_) => "metadata",
            EventKind::Other(_) => "other",
        }
    }

    #[test]
    fn every_senders_names() {
        let table = [
            // AWS, in records without the prefix and in configurations with it.
            ("ObjectCreated:Put", "content"),
            ("ObjectCreated:Post", "content"),
            ("ObjectCreated:Copy", "content"),
            ("ObjectCreated:CompleteMultipartUpload", "content"),
            ("s3:ObjectCreated:Put", "content"),
            ("ObjectRemoved:Delete", "removal"),
            ("ObjectRemoved:DeleteMarkerCreated", "removal"),
            ("ObjectRestore:Post", "metadata"),
            ("ObjectRestore:Completed", "metadata"),
            ("ObjectRestore:Delete", "metadata"),
            ("ReducedRedundancyLostObject", "other"),
            ("Replication:OperationFailedReplication", "other"),
            ("Replication:OperationMissedThreshold", "other"),
            ("Replication:OperationReplicatedAfterThreshold", "other"),
            ("Replication:OperationNotTracked", "other"),
            ("LifecycleExpiration:Delete", "removal"),
            ("LifecycleExpiration:DeleteMarkerCreated", "removal"),
            ("LifecycleTransition", "metadata"),
            ("IntelligentTiering", "metadata"),
            ("ObjectTagging:Put", "metadata"),
            ("ObjectTagging:Delete", "metadata"),
            ("ObjectAcl:Put", "metadata"),
            ("TestEvent", "other"),
            // MinIO.
            ("s3:ObjectCreated:PutTagging", "metadata"),
            ("s3:ObjectCreated:DeleteTagging", "metadata"),
            ("s3:ObjectCreated:PutRetention", "metadata"),
            ("s3:ObjectCreated:PutLegalHold", "metadata"),
            ("s3:ObjectCreated:CompleteMultipartUpload", "content"),
            ("s3:ObjectRemoved:DeleteAllVersions", "removal"),
            ("s3:ObjectRemoved:NoOP", "removal"),
            ("s3:ObjectAccessed:Get", "other"),
            ("s3:ObjectAccessed:Head", "other"),
            ("s3:ObjectTransition:Complete", "metadata"),
            ("s3:ObjectTransition:Failed", "metadata"),
            ("s3:Scanner:ManyVersions", "other"),
            ("s3:ILM:DelMarkerExpirationDelete", "other"),
            ("s3:BucketCreated", "other"),
            ("s3:BucketRemoved", "other"),
            // Ceph.
            ("ObjectLifecycle:Expiration:Current", "removal"),
            ("ObjectLifecycle:Expiration:Noncurrent", "removal"),
            ("ObjectLifecycle:Expiration:NonCurrent", "removal"),
            ("ObjectLifecycle:Expiration:DeleteMarker", "removal"),
            ("ObjectLifecycle:Expiration:AbortMPU", "other"),
            ("ObjectLifecycle:Expiration:AbortMultipartUpload", "other"),
            ("ObjectLifecycle:Transition:Current", "metadata"),
            ("ObjectLifecycle:Transition:Noncurrent", "metadata"),
            ("ObjectSynced:Create", "content"),
            ("ObjectSynced:Delete", "removal"),
            ("ObjectSynced:DeletionMarkerCreated", "removal"),
            ("Replication:Create", "content"),
            ("Replication:Delete", "removal"),
            ("Replication:DeletionMarkerCreated", "removal"),
            ("s3:ObjectLifecycle:Expiration:Current", "removal"),
            // Others and the unknown: a new creation subtype is content, anything else is not.
            ("ObjectCreated:PutObjectTagging", "metadata"),
            ("ObjectCreated:PutObjectAcl", "metadata"),
            ("ObjectCreated:SomethingNew", "content"),
            ("ObjectCreated:", "content"),
            ("", "other"),
            ("s3:", "other"),
            ("UnknownEvent", "other"),
        ];
        for (name, expected) in table {
            assert_eq!(kind_of(name), expected, "{name}");
        }
        assert_eq!(s3_kind("s3:ObjectCreated:PutTagging"), EventKind::Metadata("ObjectCreated:PutTagging".into()));
        assert_eq!(s3_kind("s3:ObjectAccessed:Get"), EventKind::Other("ObjectAccessed:Get".into()));
    }

    #[test]
    fn eventbridge_detail_types() {
        assert_eq!(eventbridge_kind("Object Created"), EventKind::Created);
        assert_eq!(eventbridge_kind("Object Deleted"), EventKind::Removed);
        for metadata in [
            "Object Restore Initiated",
            "Object Restore Completed",
            "Object Restore Expired",
            "Object Tags Added",
            "Object Tags Deleted",
            "Object ACL Updated",
            "Object Storage Class Changed",
            "Object Access Tier Changed",
        ] {
            assert_eq!(eventbridge_kind(metadata), EventKind::Metadata(metadata.into()));
        }
        assert_eq!(eventbridge_kind("Bucket Created"), EventKind::Other("Bucket Created".into()));
    }
}
