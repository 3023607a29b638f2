"""The CEL rules and patterns of the CRDs in crds/, in one place.

Two kinds: the runner's own rules (kubemill.runner.rules: parameter names, durations, the
notebook and output URLs), and Kubernetes' syntax for the values the operator copies into a
run's Job and pod (labels, names, quantities, environment variable names). Without the second
kind the API server accepts a NotebookRun that the operator can never turn into a Job; with
them, `kubectl apply` says what to fix. hack/gen_schedule_crd.py and hack/gen_policies.py write
these into the generated files; a unit test checks the hand-written NotebookRun CRD carries
exactly these rules. Each rule is checked against the real API server by
tests/e2e/test_crd_validation.py.

Regular expressions rather than the CEL `format` library, which only newer API servers have
(ValidatingAdmissionPolicy needs 1.30 anyway); the tests run them on Kubernetes 1.36.
"""

from __future__ import annotations

from typing import Any

from kubemill.runner.rules import (
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    MIN_DURATION_SECONDS,
    NOTEBOOK_URL_PATTERN,
    OUTPUT_PREFIX_PATTERN,
    PARAMETER_NAME_PATTERN,
)

__all__ = [
    "CONFIG_KEY_PATTERN",
    "DNS_SUBDOMAIN_PATTERN",
    "ENV_NAME_PATTERN",
    "LABEL_KEY_PATTERN",
    "LABEL_VALUES",
    "LABEL_VALUE_PATTERN",
    "NOTEBOOK_URL_PATTERN",
    "OUTPUT_PREFIX_PATTERN",
    "QUANTITY_PATTERN",
    "RESERVED_ENV_PREFIX",
    "affinity_schema",
    "annotations_rules",
    "cel_string",
    "duration_rules",
    "env_name_schema",
    "env_value_from_schema",
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
#: Environment variable names the operator and the runner use among themselves.
RESERVED_ENV_PREFIX = "KUBEMILL_"
#: A resource quantity (k8s.io/apimachinery resource.Quantity), as controller-gen writes it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: The schema of a label map's values; the length bound also keeps the CEL rules within the API
#: server's cost budget.
LABEL_VALUES: dict[str, Any] = {"type": "string", "maxLength": 63}
#: The most bytes an object's annotations may hold, keys and values (TotalAnnotationSizeLimitB).
ANNOTATIONS_MAX = 256 * 1024
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
    lowering their case; values can be anything, up to 256 KiB in all (ValidateAnnotations)."""
    bad_key = f"!({_key_ok('k.lowerAscii()')})"
    return [
        {
            "rule": f"self.all(k, {_key_ok('k.lowerAscii()')})",
            "messageExpression": f"'{field} key \"' + self.filter(k, {bad_key})[0] + "
            f'\'" is not an annotation key: use an optional DNS prefix and "/", then '
            f"{_LABEL_RULE_HELP}, e.g. example.com/owner'",
        },
        {
            # Characters, where the API server counts bytes (bytes() would cost too much to
            # estimate): text beyond ASCII can still pass here and be refused in the Job.
            "rule": f"self.map(k, size(k) + size(self[k])).sum() <= {ANNOTATIONS_MAX}",
            "message": f"{field} must total at most 256 KiB (keys and values); keep large data "
            "in a ConfigMap or in S3",
        },
    ]


def duration_rules(
    field: str, example: str, absent: str = "leave it out for no limit"
) -> list[dict[str, Any]]:
    """x-kubernetes-validations of a duration string (kubemill.runner.rules); `absent` says
    what leaving the field out means."""
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
            f"seconds, and 0 would fail every run at once); {absent}",
        },
    ]


def env_name_schema(description: str, reserved: str = "") -> dict[str, Any]:
    """An environment variable name (or envFrom prefix); names starting with `reserved` are
    refused."""
    rules = [
        {
            "rule": f"self.matches({cel_string(ENV_NAME_PATTERN)})",
            "message": "environment variable names are printable ASCII characters other "
            "than '=', e.g. MY_SETTING",
        }
    ]
    if reserved:
        # The operator's variables come first in the container's env, and a later entry of the
        # same name wins: KUBEMILL_SECRET_0 would silently replace a secret parameter.
        rules.append(
            {
                "rule": f"!self.startsWith({cel_string(reserved)})",
                "message": f"environment variable names starting with {reserved} are kubemill's "
                "own (run identity, secret parameters); choose another name",
            }
        )
    return {
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": 256,
        "x-kubernetes-validations": rules,
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
    of these schema keys there equals the value here (None: the key is absent)."""
    toleration_key_ok = _key_ok("self.key")
    exists = "has(self.operator) && self.operator == 'Exists'"
    return {
        "notebook": {
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches({cel_string(NOTEBOOK_URL_PATTERN)})",
                    "message": "spec.notebook must be s3://BUCKET/KEY or an http(s):// URL",
                }
            ]
        },
        "output": {
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches({cel_string(OUTPUT_PREFIX_PATTERN)})",
                    "message": "spec.output must be an S3 prefix such as s3://my-bucket/results/",
                }
            ]
        },
        "timeout": {
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": duration_rules("spec.timeout", "90s, 10m, 1h30m or 2h"),
        },
        "startTimeout": {
            "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": duration_rules(
                "spec.startTimeout", "90s, 10m or 1h", "leave it out for the operator's default"
            ),
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
        "env[]": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.valueFrom) || !has(self.value) || self.value == ''",
                    "message": "spec.env[]: set value or valueFrom, not both",
                }
            ]
        },
        "env[].name": env_name_schema("Variable name.", reserved=RESERVED_ENV_PREFIX),
        "env[].valueFrom": {
            **env_value_from_schema(),
            "x-kubernetes-preserve-unknown-fields": None,
        },
        "affinity": {**affinity_schema(), "x-kubernetes-preserve-unknown-fields": None},
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


# --- core/v1 Affinity and EnvVarSource, as the API server validates them in a pod template ----

_LABEL_KEY_RULE = f"self.matches({cel_string(LABEL_KEY_PATTERN)}) && self.indexOf('/') <= 253"
_DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NODE_NAME_RULE = f"self.matches({cel_string(DNS_SUBDOMAIN_PATTERN)})"


def _obj(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _strings(description: str, max_items: int, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "array",
        "description": description,
        "maxItems": max_items,
        "items": {"type": "string", **item},
    }


def _label_key(description: str, field: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "maxLength": 317,
        "x-kubernetes-validations": [
            {
                "rule": _LABEL_KEY_RULE,
                "message": f"{field} must be a label key such as topology.kubernetes.io/zone",
            }
        ],
    }


def _requirement(field: str, operators: list[str], label_values: bool) -> dict[str, Any]:
    """A NodeSelectorRequirement or LabelSelectorRequirement: the operator decides how many
    values there are (ValidateNodeSelectorRequirement, ValidateLabelSelectorRequirement)."""
    value: dict[str, Any] = {"maxLength": 63 if label_values else 256}
    if label_values:
        value["x-kubernetes-validations"] = [
            {
                "rule": f"self.matches({cel_string(LABEL_VALUE_PATTERN)})",
                "message": f"{field}.values must be label values: {_LABEL_RULE_HELP}",
            }
        ]
    rules = [
        {
            "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && "
            "size(self.values) > 0)",
            "message": f"{field}: operator In and NotIn need values",
        },
        {
            "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || "
            "size(self.values) == 0",
            "message": f"{field}: operator Exists and DoesNotExist take no values",
        },
    ]
    if "Gt" in operators:
        rules.append(
            {
                "rule": "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && "
                "size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
                "message": f"{field}: operator Gt and Lt take one whole number as values",
            }
        )
    return {
        "type": "object",
        "description": "A key, an operator and values.",
        "required": ["key", "operator"],
        "properties": {
            "key": _label_key("The label key.", f"{field}.key"),
            "operator": {
                "type": "string",
                "description": " or ".join(operators),
                "enum": operators,
            },
            "values": _strings("Values the operator compares with.", 64, value),
        },
        "x-kubernetes-validations": rules,
    }


def _node_term(field: str, label_values: bool) -> dict[str, Any]:
    return _obj(
        "Node labels (matchExpressions) and fields (matchFields) to match, all of them.",
        {
            "matchExpressions": {
                "type": "array",
                "description": "Requirements on node labels.",
                "maxItems": 16,
                "items": _requirement(
                    f"{field}.matchExpressions[]",
                    ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
                    label_values,
                ),
            },
            "matchFields": {
                "type": "array",
                "description": "Requirements on node fields: metadata.name In or NotIn one name.",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "description": "A node field requirement.",
                    "required": ["key", "operator", "values"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "description": "metadata.name.",
                            "enum": ["metadata.name"],
                        },
                        "operator": {
                            "type": "string",
                            "description": "In or NotIn.",
                            "enum": ["In", "NotIn"],
                        },
                        "values": _strings(
                            "One node name.",
                            1,
                            {
                                "maxLength": 253,
                                "x-kubernetes-validations": [
                                    {
                                        "rule": _NODE_NAME_RULE,
                                        "message": f"{field}.matchFields[].values must be node "
                                        "names",
                                    }
                                ],
                            },
                        )
                        | {"minItems": 1},
                    },
                },
            },
        },
    )


def _label_selector(field: str) -> dict[str, Any]:
    return _obj(
        "Pods whose labels match (metav1.LabelSelector).",
        {
            "matchLabels": {
                "type": "object",
                "description": "Labels the pods have.",
                "maxProperties": 32,
                "additionalProperties": LABEL_VALUES,
                "x-kubernetes-validations": labels_rules(f"{field}.matchLabels"),
            },
            "matchExpressions": {
                "type": "array",
                "description": "Requirements on the pods' labels.",
                "maxItems": 16,
                "items": _requirement(
                    f"{field}.matchExpressions[]", ["In", "NotIn", "Exists", "DoesNotExist"], True
                ),
            },
        },
    )


def _pod_term(field: str) -> dict[str, Any]:
    label_keys = {"maxLength": 317, "x-kubernetes-validations": []}
    label_keys["x-kubernetes-validations"] = [
        {"rule": _LABEL_KEY_RULE, "message": f"{field}: match label keys must be label keys"}
    ]
    return _obj(
        "Pods (by label, in namespaces) near which the runner pod should or should not run.",
        {
            "labelSelector": _label_selector(f"{field}.labelSelector"),
            "namespaceSelector": _label_selector(f"{field}.namespaceSelector"),
            "namespaces": _strings(
                "Namespaces of those pods; default the run's.",
                64,
                {
                    "maxLength": 63,
                    "x-kubernetes-validations": [
                        {
                            "rule": f"self.matches({cel_string(_DNS_LABEL_PATTERN)})",
                            "message": f"{field}.namespaces must be namespace names",
                        }
                    ],
                },
            ),
            "topologyKey": _label_key(
                "The node label whose equal values count as near, e.g. kubernetes.io/hostname.",
                f"{field}.topologyKey",
            )
            | {"minLength": 1},
            "matchLabelKeys": _strings(
                "Keys of the runner pod's labels to match too.", 16, label_keys
            ),
            "mismatchLabelKeys": _strings(
                "Keys of the runner pod's labels to mismatch.", 16, label_keys
            ),
        },
        required=["topologyKey"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.labelSelector) || (!has(self.matchLabelKeys) && "
                    "!has(self.mismatchLabelKeys))",
                    "message": f"{field}: matchLabelKeys and mismatchLabelKeys need a "
                    "labelSelector",
                },
                {
                    "rule": "!has(self.matchLabelKeys) || !has(self.mismatchLabelKeys) || "
                    "!self.matchLabelKeys.exists(k, k in self.mismatchLabelKeys)",
                    "message": f"{field}: a key cannot be in both matchLabelKeys and "
                    "mismatchLabelKeys",
                },
            ]
        },
    )


def _weighted(field: str, key: str, term: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "array",
        "description": "Preferences, each with a weight from 1 to 100.",
        "maxItems": 16,
        "items": _obj(
            "A weighted preference.",
            {
                "weight": {
                    "type": "integer",
                    "description": "From 1 to 100.",
                    "minimum": 1,
                    "maximum": 100,
                },
                key: term,
            },
            required=["weight", key],
        ),
    }


def _pod_affinity(field: str, what: str) -> dict[str, Any]:
    required = f"{field}.requiredDuringSchedulingIgnoredDuringExecution[]"
    preferred = f"{field}.preferredDuringSchedulingIgnoredDuringExecution[].podAffinityTerm"
    return _obj(
        f"Run the runner pod {what} other pods.",
        {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "type": "array",
                "description": "Terms that must all hold.",
                "maxItems": 16,
                "items": _pod_term(required),
            },
            "preferredDuringSchedulingIgnoredDuringExecution": _weighted(
                field, "podAffinityTerm", _pod_term(preferred)
            ),
        },
    )


def affinity_schema() -> dict[str, Any]:
    """core/v1 Affinity, with the checks the API server makes on a pod template's affinity."""
    node = "spec.affinity.nodeAffinity"
    required = f"{node}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[]"
    preferred = f"{node}.preferredDuringSchedulingIgnoredDuringExecution[].preference"
    return _obj(
        "Scheduling affinity of the runner pod (core/v1 Affinity).",
        {
            "nodeAffinity": _obj(
                "Nodes the runner pod must or should run on.",
                {
                    "requiredDuringSchedulingIgnoredDuringExecution": _obj(
                        "Node selector terms, any of which must match.",
                        {
                            "nodeSelectorTerms": {
                                "type": "array",
                                "description": "Terms, any of which must match.",
                                "minItems": 1,
                                "maxItems": 16,
                                "items": _node_term(required, True),
                            }
                        },
                        required=["nodeSelectorTerms"],
                    ),
                    "preferredDuringSchedulingIgnoredDuringExecution": _weighted(
                        node, "preference", _node_term(preferred, False)
                    ),
                },
            ),
            "podAffinity": _pod_affinity("spec.affinity.podAffinity", "near"),
            "podAntiAffinity": _pod_affinity("spec.affinity.podAntiAffinity", "away from"),
        },
    )


_FIELD_PATHS = (
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['"
    + LABEL_KEY_PATTERN.removeprefix("^").removesuffix("$")
    + r"'\]|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)
_RESOURCE_FIELDS = [
    f"{kind}.{name}"
    for kind in ("limits", "requests")
    for name in ("cpu", "memory", "ephemeral-storage")
]


def _key_selector(what: str, field: str) -> dict[str, Any]:
    return _obj(
        f"A key of a {what} in the run's namespace.",
        {
            "name": {"type": "string", "description": f"The {what}."}
            | _name_rules(f"{field}.name", what),
            "key": {"type": "string", "description": "The key."} | _key_rules(f"{field}.key"),
            "optional": {"type": "boolean", "description": f"Start even if the {what} is missing."},
        },
        required=["name", "key"],
    )


def env_value_from_schema() -> dict[str, Any]:
    """core/v1 EnvVarSource, checked as the API server checks a container's env."""
    field = "spec.env[].valueFrom"
    sources = ["fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef"]
    return _obj(
        "Where the value comes from (core/v1 EnvVarSource): exactly one of fieldRef, "
        "resourceFieldRef, configMapKeyRef and secretKeyRef.",
        {
            "fieldRef": _obj(
                "A field of the runner pod.",
                {
                    "apiVersion": {"type": "string", "description": "v1.", "enum": ["v1"]},
                    "fieldPath": {
                        "type": "string",
                        "description": "metadata.name, metadata.namespace, metadata.uid, "
                        "metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, "
                        "spec.serviceAccountName, status.hostIP(s) or status.podIP(s).",
                        "maxLength": 400,
                        "x-kubernetes-validations": [
                            {
                                "rule": f"self.matches({cel_string(_FIELD_PATHS)})",
                                "message": f"{field}.fieldRef.fieldPath must be one of "
                                "metadata.name, metadata.namespace, metadata.uid, "
                                "metadata.labels['KEY'], metadata.annotations['KEY'], "
                                "spec.nodeName, spec.serviceAccountName, status.hostIP, "
                                "status.hostIPs, status.podIP, status.podIPs",
                            }
                        ],
                    },
                },
                required=["fieldPath"],
            ),
            "resourceFieldRef": _obj(
                "A resource limit or request of the runner container.",
                {
                    "containerName": {
                        "type": "string",
                        "description": "runner (the only container).",
                        "enum": ["runner"],
                    },
                    "resource": {
                        "type": "string",
                        "description": ", ".join(_RESOURCE_FIELDS) + ".",
                        "enum": _RESOURCE_FIELDS,
                    },
                    "divisor": {
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "x-kubernetes-int-or-string": True,
                        "pattern": QUANTITY_PATTERN,
                        "maxLength": 64,
                        "description": "Unit of the value, e.g. 1Mi; default 1.",
                    },
                },
                required=["resource"],
            ),
            "configMapKeyRef": _key_selector("ConfigMap", f"{field}.configMapKeyRef"),
            "secretKeyRef": _key_selector("Secret", f"{field}.secretKeyRef"),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": " + ".join(f"(has(self.{s}) ? 1 : 0)" for s in sources) + " == 1",
                    "message": f"{field} needs exactly one of " + ", ".join(sources),
                }
            ]
        },
    )
