"""Signs up, funds and logs in the users of the wrk wallet benchmark; writes users.lua.

Usage: setup.py BASE_URL API_KEY USERS OUT_LUA
"""
import json
import sys
import urllib.request

base, api_key, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def post(path, body, token=None):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


post("/v1/ledger/accounts", [{"id": "1", "ledger": 840, "code": 2}], api_key)
users = []
for i in range(count):
    email = f"wrk{i}@example.com"
    signup = post("/v1/auth/signup", {"email": email, "password": "wrk password", "first_name": "W", "last_name": str(i)})
    wallet = signup["accounts"][0]["id"]
    ledger_id = str(int(wallet.replace("-", ""), 16))
    funding = [{"id": str(10_000 + i), "debit_account_id": "1", "credit_account_id": ledger_id,
                "amount": "100000000000", "ledger": 840, "code": 2}]
    assert post("/v1/ledger/transfers", funding, api_key)["results"][0]["result"] == "created"
    tokens = post("/v1/auth/login", {"email": email, "password": "wrk password"})
    users.append((tokens["access_token"], wallet))

with open(out, "w") as lua:
    lua.write("users = {\n")
    for token, wallet in users:
        lua.write(f'  {{ token = "{token}", wallet = "{wallet}" }},\n')
    lua.write("}\n")
