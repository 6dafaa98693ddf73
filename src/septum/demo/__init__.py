"""The user's whole path on the lab: `helm install` Septum, the Star Wars app, a policy, flows.

`septum demo` walks it with progress on screen; the end-to-end tests walk the same steps and
assert each outcome. Not part of the product: it drives the lab and the real CLIs (helm,
kubectl, hubble) as a user would.
"""
