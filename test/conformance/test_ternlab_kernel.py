"""The Jupyter project's own kernel conformance suite (jupyter_kernel_test) against ternlab.

Run by test/kernel-conformance.test.ts with the kernelspec installed under JUPYTER_PATH. Every
sample below is filled in, so that no test of the suite is skipped.
"""
import unittest

import jupyter_kernel_test


class TernlabKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "ternlab"
    language_name = "typescript"
    file_extension = ".ts"

    code_hello_world = 'console.log("hello, world")'
    code_stderr = 'console.error("oops, on stderr")'

    completion_samples = [
        {"text": "Math.ma", "matches": {"max"}},
        {"text": "const longVariableName = 1;\nlongVariab", "matches": {"longVariableName"}},
    ]
    complete_code_samples = ["1 + 1", "const x = 3;", "function f() { return 1; }", "for (const i of [1, 2]) {}"]
    incomplete_code_samples = ["function f() {", "const a = [1,", "if (true) {\n  console.log(1);"]
    invalid_code_samples = ["const = 5;", "1 +* 2 )", "let x = );"]

    code_page_something = "Math.max?"

    code_generate_error = 'throw new Error("this cell fails on purpose")'

    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": '"hello" + ", " + "world"', "result": "'hello, world'"},
        {"code": "[1, 2, 3].map((v) => v * 2)", "result": "[ 2, 4, 6 ]"},
    ]

    code_display_data = [
        {"code": 'display.html("<b>bold</b>")', "mime": "text/html"},
        {"code": 'display.markdown("*emphasis*")', "mime": "text/markdown"},
        {"code": 'display({ data: [{ type: "scatter", y: [1, 3, 2] }], layout: { title: { text: "t" } } })', "mime": "application/vnd.plotly.v1+json"},
    ]

    code_history_pattern = "6 *"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "Math.max"

    code_clear_output = "clearOutput()"


if __name__ == "__main__":
    unittest.main(verbosity=2)
