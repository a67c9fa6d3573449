"""Every operator the generic tests run over, by name.

A case builds ``(op, x)`` for a real dtype (``torch.float32`` or ``torch.float64``): the operator
and an example input with a batch of more than one sample on odd, non-square sizes. Complex
operators take the matching complex dtype. Each operator module contributes its cases from its
own file.
"""

from tests.operators.cases_basic import CASES as BASIC
from tests.operators.cases_ct import CASES as CT
from tests.operators.cases_mri import CASES as MRI

LINEAR_CASES = {**BASIC, **CT, **MRI}
