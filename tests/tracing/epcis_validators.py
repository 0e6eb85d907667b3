"""Someone else's validators for EPCIS 2.0 documents: GS1's JSON schema (with format checking, as GS1's
tooling runs it), GS1's SHACL shapes (pySHACL over the document's RDF, made by PyLD with GS1's context
served locally: nothing is fetched), and the reference CBV 2.0 event hash generator (PyPI
`epcis-event-hash-generator`, an implementation independent of ours)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from epcis_event_hash_generator import hash_generator, json_to_py
from pyld import jsonld
from pyshacl import validate
from rdflib import RDF, Graph
from rdflib.namespace import SH

STANDARDS = Path("/work/shared/standards/epcis")
CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
_SCHEMA = json.loads((STANDARDS / "EPCIS-JSON-Schema.json").read_text())
_CONTEXT = json.loads((STANDARDS / "epcis-context.jsonld").read_text())


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def _loader(url: str, options: Any = None) -> dict[str, Any]:
    if url == CONTEXT_URL:
        return {
            "contentType": "application/ld+json",
            "contextUrl": None,
            "documentUrl": url,
            "document": _CONTEXT,
        }
    raise RuntimeError(f"the tests fetch nothing: {url}")


def _shapes() -> Graph:
    """GS1's shapes, with the file's known defect mended: about two dozen shapes with `sh:path` are
    typed sh:NodeShape and linked with sh:node (pySHACL refuses to load them): they are property shapes,
    relinked with sh:property; SpecifySetOrUnsetShape has no path but is linked with sh:property: it is
    a node shape, relinked with sh:node. No constraint is changed."""
    g = Graph().parse(STANDARDS / "EPCIS-SHACL.ttl", format="turtle")
    with_path = set(g.subjects(SH.path, None))
    for s in list(g.subjects(RDF.type, SH.NodeShape)):
        if s in with_path:
            g.remove((s, RDF.type, SH.NodeShape))
            g.add((s, RDF.type, SH.PropertyShape))
    for s, o in list(g.subject_objects(SH.node)):
        if o in with_path:
            g.remove((s, SH.node, o))
            g.add((s, SH.property, o))
    for s, o in list(g.subject_objects(SH.property)):
        if o not in with_path:
            g.remove((s, SH.property, o))
            g.add((s, SH.node, o))
    return g


_SHAPES = _shapes()


def shacl_report(doc: dict[str, Any]) -> tuple[bool, str]:
    quads = jsonld.to_rdf(doc, {"format": "application/n-quads", "documentLoader": _loader})
    data = Graph().parse(data=quads, format="nquads")
    conforms, _, text = validate(data, shacl_graph=_SHAPES)
    return bool(conforms), str(text)


def reference_hashes(doc: dict[str, Any]) -> list[str]:
    """eventIDs as the reference implementation computes them."""
    events = json_to_py.event_list_from_epcis_document_str(json.dumps(doc))
    return list(hash_generator.epcis_hashes_from_events(events))


def assert_valid(doc: dict[str, Any]) -> None:
    errors = schema_errors(doc)
    assert not errors, errors[:5]
    conforms, report = shacl_report(doc)
    assert conforms, report[:3000]
