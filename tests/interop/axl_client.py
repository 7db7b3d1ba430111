"""A real AXL client against the emulator: zeep with Cisco's AXL 12.5 WSDL and XSDs as shipped
inside the `ciscoaxl` package (installed by the Rust test, never committed).

Usage: axl_client.py <https port> <lab CA file> <user> <password>
Adds the Expressway-C entry exp-c2 (SAN exp-c2.domain-9.com), lists the table, and prints
{"add": "<return>", "list": [{uuid, HostNameOrIP, description, X509...}, ...]} as JSON.
Exits non-zero (with zeep's traceback) if zeep cannot parse a response.
"""

import glob
import json
import os
import sys

import ciscoaxl
import requests
from requests.auth import HTTPBasicAuth
from zeep import Client, Settings
from zeep.transports import Transport
from zeep.helpers import serialize_object

BINDING = "{http://www.cisco.com/AXLAPIService/}AXLAPIBinding"


def wsdl_path():
    root = os.path.dirname(ciscoaxl.__file__)
    found = glob.glob(os.path.join(root, "**", "12.5", "AXLAPI.wsdl"), recursive=True)
    if not found:
        sys.exit(f"no 12.5/AXLAPI.wsdl under {root}")
    return found[0]


def main():
    port, ca, user, password = sys.argv[1:5]
    session = requests.Session()
    session.auth = HTTPBasicAuth(user, password)
    session.verify = ca
    # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment would override `verify` (and
    # proxy variables would reroute 127.0.0.1): the lab CA, and nothing else, is trusted.
    session.trust_env = False
    client = Client(
        wsdl_path(),
        settings=Settings(strict=True, xml_huge_tree=False),
        transport=Transport(session=session, timeout=10),
    )
    axl = client.create_service(BINDING, f"https://127.0.0.1:{port}/axl/")
    added = axl.addExpresswayCConfiguration(
        expresswayCConfiguration={
            "HostNameOrIP": "exp-c2",
            "description": "added through axl",
            "X509SubjectNameorSubjectAlternateName": "exp-c2.domain-9.com",
        }
    )
    listed = axl.listExpresswayCConfiguration(
        searchCriteria={"HostNameOrIP": "%"},
        returnedTags={
            "HostNameOrIP": "",
            "description": "",
            "X509SubjectNameorSubjectAlternateName": "",
        },
    )
    got = axl.getExpresswayCConfiguration(HostNameOrIP="exp-c2")
    rows = serialize_object(listed["return"]["expresswayCConfiguration"], dict) or []
    print(
        json.dumps(
            {
                "add": added["return"],
                "list": [dict(r) for r in rows],
                "get": dict(
                    serialize_object(got["return"]["expresswayCConfiguration"], dict)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
