"""The CEL rules and patterns of the CRDs in crds/, in one place.

Two kinds: the runner's own rules (kubemill.runner.rules: parameter names, durations), and
Kubernetes' syntax for the values the operator copies into a run's Job and pod (labels, names,
quantities, environment variable names). Without the second kind the API server accepts a
NotebookRun that the operator can never turn into a Job; with them, `kubectl apply` says what to
fix. hack/gen_schedule_crd.py and hack/gen_policies.py write these into the generated files; a
unit test checks the hand-written NotebookRun CRD carries exactly these rules. Each rule is
checked against the real API server by tests/e2e/test_crd_validation.py.

Regular expressions only, no CEL `format` library, so the CRDs install on Kubernetes 1.30 (the
first with ValidatingAdmissionPolicy); `quantity()` is older than that.
"""

from __future__ import annotations

from typing import Any

from kubemill.runner.rules import (
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    MIN_DURATION_SECONDS,
    PARAMETER_NAME_PATTERN,
)

__all__ = [
    "CONFIG_KEY_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "ENV_NAME_PATTERN",
    "LABEL_KEY_PATTERN",
    "LABEL_VALUES",
    "LABEL_VALUE_PATTERN",
    "QUANTITY_PATTERN",
    "annotations_rules",
    "cel_string",
    "duration_rules",
    "env_name_schema",
    "labels_rules",
    "quantities_schema",
    "resources_rules",
    "run_spec_rules",
    "schema_at",
]

#: A label key: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters
#: (k8s.io/apimachinery IsQualifiedName); the prefix's length (at most 253) is a separate rule.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: A label value: empty, or at most 63 characters starting and ending alphanumeric.
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
#: An object name such as a ServiceAccount's, ConfigMap's or Secret's (RFC 1123 subdomain).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A ConfigMap or Secret key.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
#: An environment variable name as Kubernetes 1.34+ accepts it (RelaxedEnvironmentVariable-
#: Validation, GA): printable ASCII but '='.
ENV_NAME_PATTERN = r"^[ -<>-~]+$"
#: A resource quantity (k8s.io/apimachinery resource.Quantity), as controller-gen writes it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: The schema of a label map's values; the length bound also keeps the CEL rules within the API
#: server's cost budget.
LABEL_VALUES: dict[str, Any] = {"type": "string", "maxLength": 63}
#: Resource names a container may use without a domain (helper.IsStandardContainerResourceName).
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")

#: A duration part of 7 integer digits, the first not 0: at least 1,000,000 ms.
_LONG_PART = r"(^|[a-z])[1-9][0-9]{6}"
_LABEL_RULE_HELP = (
    "at most 63 letters, digits, -, _ or ., starting and ending with a letter or digit"
)


def cel_string(text: str) -> str:
    """A CEL single-quoted string literal holding `text`."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key_ok(var: str) -> str:
    return f"{var}.matches({cel_string(LABEL_KEY_PATTERN)}) && {var}.indexOf('/') <= 253"


def labels_rules(field: str) -> list[dict[str, Any]]:
    """x-kubernetes-validations of a map of labels at `field`, naming the first bad entry."""
    bad_key = f"!({_key_ok('k')})"
    bad_value = f"!self[k].matches({cel_string(LABEL_VALUE_PATTERN)})"
    return [
        {
            "rule": f"self.all(k, {_key_ok('k')})",
            "messageExpression": f"'{field} key \"' + self.filter(k, {bad_key})[0] + "
            f'\'" is not a label key: use an optional DNS prefix and "/", then {_LABEL_RULE_HELP}, '
            "e.g. team or example.com/team'",
        },
        {
            "rule": f"self.all(k, self[k].matches({cel_string(LABEL_VALUE_PATTERN)}))",
            "messageExpression": f"'{field}.' + self.filter(k, {bad_value})[0] + ' is \"' + "
            f"self[self.filter(k, {bad_value})[0]] + '\", not a label value: use "
            f"{_LABEL_RULE_HELP} (or nothing), e.g. nightly-2027'",
        },
    ]


def annotations_rules(field: str) -> list[dict[str, Any]]:
    """x-kubernetes-validations of a map of annotations: keys are checked as label keys after
    lowering their case; values can be anything."""
    bad_key = f"!({_key_ok('k.lowerAscii()')})"
    return [
        {
            "rule": f"self.all(k, {_key_ok('k.lowerAscii()')})",
            "messageExpression": f"'{field} key \"' + self.filter(k, {bad_key})[0] + "
            f'\'" is not an annotation key: use an optional DNS prefix and "/", then '
            f"{_LABEL_RULE_HELP}, e.g. example.com/owner'",
        }
    ]


def duration_rules(field: str, example: str) -> list[dict[str, Any]]:
    """x-kubernetes-validations of a duration string (kubemill.runner.rules)."""
    matches = f"self.matches({cel_string(DURATION_PATTERN)})"
    return [
        {
            "rule": matches,
            "message": f"{field} must be a duration such as {example}",
        },
        {
            # duration() reads Go's syntax, a superset of the pattern, and fails on overflow;
            # a part with 7 integer digits is at least 1 s anyway (see DURATION_MAX_LENGTH), so
            # it is never evaluated for one.
            "rule": f"!{matches} || self.matches({cel_string(_LONG_PART)}) || "
            f"duration(self) >= duration('{MIN_DURATION_SECONDS}s')",
            "message": f"{field} must be at least {MIN_DURATION_SECONDS}s (it is counted in whole "
            "seconds, and 0 would fail every run at once); leave it out for no limit",
        },
    ]


def env_name_schema(description: str) -> dict[str, Any]:
    """An environment variable name (or envFrom prefix)."""
    return {
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": 256,
        "x-kubernetes-validations": [
            {
                "rule": f"self.matches({cel_string(ENV_NAME_PATTERN)})",
                "message": "environment variable names are printable ASCII characters other "
                "than '=', e.g. MY_SETTING",
            }
        ],
    }


def _q(expr: str) -> str:
    return f"quantity(string({expr}))"


def quantities_schema(field: str, description: str) -> dict[str, Any]:
    """resources.limits or resources.requests: resource names to quantities."""
    value = "self[k]"
    not_quantity = f"!isQuantity(string({value}))"
    negative = f"isQuantity(string({value})) && {_q(value)}.isLessThan(quantity('0'))"
    extended = "k.contains('/') && !k.contains('kubernetes.io/')"
    fraction = f"{extended} && isQuantity(string({value})) && !{_q(value)}.isInteger()"
    name_ok = (
        f"k in {list(STANDARD_RESOURCES)} || k.startsWith('hugepages-') || "
        f"(k.contains('/') && {_key_ok('k')})"
    )
    return {
        "type": "object",
        "description": description,
        "maxProperties": 32,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.all(k, {name_ok})",
                "messageExpression": f"'{field} has \"' + self.filter(k, !({name_ok}))[0] + "
                "'\": use cpu, memory, ephemeral-storage, hugepages-<size> or an extended "
                "resource with its domain, e.g. nvidia.com/gpu'",
            },
            {
                "rule": f"self.all(k, !({not_quantity}))",
                "messageExpression": f"'{field}.' + self.filter(k, {not_quantity})[0] + ' is \"' "
                f"+ string(self[self.filter(k, {not_quantity})[0]]) + '\", not a Kubernetes "
                "quantity: write e.g. 2, 500m, 512Mi, 4Gi or 4G (no space; Gi or G, not GB)'",
            },
            {
                "rule": f"self.all(k, !({negative}))",
                "messageExpression": f"'{field}.' + self.filter(k, {negative})[0] + ' must not "
                "be negative'",
            },
            {
                "rule": f"self.all(k, !({fraction}))",
                "messageExpression": f"'{field}.' + self.filter(k, {fraction})[0] + ' is an "
                "extended resource and must be a whole number, e.g. 1'",
            },
        ],
    }


def resources_rules() -> list[dict[str, Any]]:
    """Rules across spec.resources.requests and .limits (ValidateResourceRequirements)."""
    both = "isQuantity(string(self.requests[k])) && isQuantity(string(self.limits[k]))"
    cmp = f"{_q('self.requests[k]')}.compareTo({_q('self.limits[k]')})"
    above = f"k in self.limits && {both} && {cmp} > 0"
    extended = "k.contains('/') && !k.contains('kubernetes.io/') || k.startsWith('hugepages-')"
    unequal = f"({extended}) && (!(k in self.limits) || ({both} && {cmp} != 0))"
    return [
        {
            "rule": f"!has(self.requests) || !has(self.limits) || self.requests.all(k, !({above}))",
            "messageExpression": "'spec.resources.requests.' + self.requests.filter(k, "
            f"{above})[0] + ' is more than its limit; lower the request or raise the limit'",
        },
        {
            "rule": f"!has(self.requests) || self.requests.all(k, !(has(self.limits) ? "
            f"{unequal} : ({extended})))",
            "messageExpression": "'spec.resources.requests.' + self.requests.filter(k, "
            f"has(self.limits) ? {unequal} : ({extended}))[0] + ' cannot be overcommitted: set "
            "spec.resources.limits to the same value (or set only the limit)'",
        },
    ]


def _name_rules(field: str, what: str) -> dict[str, Any]:
    return {
        "maxLength": 253,
        "x-kubernetes-validations": [
            {
                "rule": f"self.matches({cel_string(DNS_SUBDOMAIN_PATTERN)})",
                "message": f"{field} must be the name of a {what}: lowercase letters, digits, - "
                "and ., starting and ending with a letter or digit",
            }
        ],
    }


def _key_rules(field: str) -> dict[str, Any]:
    return {
        "maxLength": 253,
        "x-kubernetes-validations": [
            {
                "rule": f"self.matches({cel_string(CONFIG_KEY_PATTERN)}) && self != '.' && "
                "!self.startsWith('..')",
                "message": f"{field} must be a key of letters, digits, -, _ and ., other than . "
                "and not starting with ..",
            }
        ],
    }


def _env_from_ref(what: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"The {what} (in the run's namespace).",
        "required": ["name"],
        "properties": {
            "name": {
                "type": "string",
                "description": f"Name of the {what}.",
                **_name_rules(f"spec.envFrom[].{what[0].lower() + what[1:]}Ref.name", what),
            },
            "optional": {
                "type": "boolean",
                "description": f"Start the runner even if the {what} does not exist.",
            },
        },
    }


def run_spec_rules() -> dict[str, dict[str, Any]]:
    """What the NotebookRun CRD's spec schema carries at each path (property names joined by
    '.', `[]` for an array's items): the CRD is written by hand, and a unit test checks that each
    of these schema keys there equals the value here."""
    toleration_key_ok = _key_ok("self.key")
    exists = "has(self.operator) && self.operator == 'Exists'"
    return {
        "timeout": {
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": duration_rules("spec.timeout", "90s, 10m, 1h30m or 2h"),
        },
        "cellTimeout": {
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": duration_rules("spec.cellTimeout", "30s or 10m"),
        },
        "notebookFrom.configMapKeyRef.name": _name_rules(
            "spec.notebookFrom.configMapKeyRef.name", "ConfigMap"
        ),
        "notebookFrom.configMapKeyRef.key": _key_rules("spec.notebookFrom.configMapKeyRef.key"),
        "parametersFrom[].name": {"pattern": PARAMETER_NAME_PATTERN, "maxLength": 128},
        "parametersFrom[].secretKeyRef.name": _name_rules(
            "spec.parametersFrom[].secretKeyRef.name", "Secret"
        ),
        "parametersFrom[].secretKeyRef.key": _key_rules("spec.parametersFrom[].secretKeyRef.key"),
        "image": {
            "maxLength": 1024,
            "x-kubernetes-validations": [
                {
                    "rule": "self == self.trim()",
                    "message": "spec.image must not start or end with spaces",
                }
            ],
        },
        "ttlSecondsAfterFinished": {"maximum": 2147483647},
        "resources": {"x-kubernetes-validations": resources_rules()},
        "resources.limits": quantities_schema(
            "spec.resources.limits", "Maximum resources, for example cpu: 2 and memory: 4Gi."
        ),
        "resources.requests": quantities_schema(
            "spec.resources.requests",
            "Guaranteed resources, for example cpu: 500m and memory: 1Gi.",
        ),
        "env": {"maxItems": 256},
        "env[].name": env_name_schema("Variable name."),
        "envFrom": {
            "maxItems": 64,
            "items": {
                "type": "object",
                "description": "One ConfigMap or Secret whose keys become variables.",
                "properties": {
                    "prefix": env_name_schema("Prepended to each key's variable name."),
                    "configMapRef": _env_from_ref("ConfigMap"),
                    "secretRef": _env_from_ref("Secret"),
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.configMapRef) != has(self.secretRef)",
                        "message": "each spec.envFrom item needs exactly one of configMapRef and "
                        "secretRef",
                    }
                ],
            },
        },
        "serviceAccountName": _name_rules("spec.serviceAccountName", "ServiceAccount"),
        "nodeSelector": {
            "maxProperties": 64,
            "additionalProperties": LABEL_VALUES,
            "x-kubernetes-validations": labels_rules("spec.nodeSelector"),
        },
        "tolerations": {"maxItems": 64},
        "tolerations[]": {
            "x-kubernetes-validations": [
                {
                    "rule": f"!has(self.key) || self.key == '' || ({toleration_key_ok})",
                    "message": "spec.tolerations[].key must be a label key such as "
                    "example.com/gpu, or empty with operator Exists",
                },
                {
                    "rule": f"(has(self.key) && self.key != '') || ({exists})",
                    "message": "spec.tolerations[]: a toleration without a key needs operator "
                    "Exists (it then tolerates every taint)",
                },
                {
                    "rule": f"!({exists}) || !has(self.value) || self.value == ''",
                    "message": "spec.tolerations[]: operator Exists takes no value; remove it or "
                    "use operator Equal",
                },
                {
                    "rule": f"({exists}) || !has(self.value) || "
                    f"self.value.matches({cel_string(LABEL_VALUE_PATTERN)})",
                    "message": "spec.tolerations[].value must be a label value: "
                    + _LABEL_RULE_HELP,
                },
                {
                    "rule": "!has(self.tolerationSeconds) || "
                    "(has(self.effect) && self.effect == 'NoExecute')",
                    "message": "spec.tolerations[].tolerationSeconds needs effect NoExecute",
                },
            ],
        },
        "tolerations[].key": {"maxLength": 317},
        "tolerations[].value": {"maxLength": 63},
        "tolerations[].effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "podTemplate.metadata.labels": {
            "maxProperties": 64,
            "additionalProperties": LABEL_VALUES,
            "x-kubernetes-validations": labels_rules("spec.podTemplate.metadata.labels"),
        },
        "podTemplate.metadata.annotations": {
            "maxProperties": 64,
            "x-kubernetes-validations": annotations_rules("spec.podTemplate.metadata.annotations"),
        },
    }


def schema_at(spec_schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a run_spec_rules() path inside the spec's schema."""
    node = spec_schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node
