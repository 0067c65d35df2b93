// Package fhir files a conversation to the patient's record: it turns a
// conversation, or selected messages of it, as this device sees it into a
// FHIR R4 Bundle (type collection) of Communication resources, with the
// Practitioners who sent and received them and the Patient it is about.
//
// The resources are built with Google's FHIR R4 protocol-buffer model
// (github.com/google/fhir/go) and rendered by its jsonformat marshaller,
// so every choice element (payload content[x]) holds exactly one value
// and every code is one of its value set's.
//
// What goes in, and the rules:
//   - One Communication per standing message, in the conversation's order:
//     status completed, sent (the sender's timestamp), sender and recipient
//     (the members when it was sent) as references to Practitioner
//     resources in the bundle, priority urgent or routine, the text as
//     payload contentString and a photo as payload contentAttachment
//     (image/jpeg, base64, with size and SHA-1 hash: the stored image,
//     which media.Prepare re-encoded without metadata), a reply as
//     inResponseTo, and the message ID as an identifier.
//   - Edited messages are filed with their current text (the edit that
//     wins on every replica) and a note saying they were edited; the
//     earlier texts are not kept by chat and are not filed.
//   - Deleted messages are left out: their text is destroyed on every
//     device, and a device export never filed them before. Withdrawn
//     messages (void under chat's authorisation rule) are left out too.
//     A reply to a message left out, or not selected, keeps its
//     inResponseTo as a logical reference (the message ID as identifier).
//   - subject references the Patient resource (NHS number with system
//     https://fhir.nhs.uk/Id/nhs-number, name, birth date) when the
//     conversation is about a patient; without one there is no subject.
//   - Practitioners carry what their certificate holds: staff ID, the
//     professional registration (with the UK Core system of its regulator
//     when its prefix names one: GMC, NMC, HCPC, GPhC) and the device's
//     peer ID, and the name. A colleague whose certificate this device
//     does not know (or knows revoked) is filed by peer ID alone.
//   - An archive's export (FromFiled: what package archive filed) holds
//     the latest filed version of each message, meta.versionId its
//     version; one deleted or withdrawn after filing keeps what was filed
//     with status entered-in-error; subject is the patient of the latest
//     filing (a corrected link is filed as new versions).
//   - A photo message whose image cannot be read (or was filed without
//     it) is exported without it: its payload and a note say the photo
//     is unavailable; one unreadable photo never fails an export.
//   - received, in a member's export, is when the message first reached
//     one of its recipients as far as this device knows: the timestamp
//     (that recipient's clock) of the earliest receipt — delivered, read
//     or acknowledged — a recipient signed that covers it; receipts are
//     coalesced, so it is at most one coalescing window late. A message
//     no recipient has signed for yet has no received. In an archive's
//     export, received is when the archive first filed the message: when
//     it reached the record.
//
// Invariants: the package does no I/O, starts no goroutines and logs
// nothing; its errors never carry message text or patient data. Every
// export goes through Conversation.Export, which tells a Recorder (the
// audit trail's "exported" event) before it returns the bundle.
package fhir
