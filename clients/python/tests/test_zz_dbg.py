import subprocess, sys, time, signal
from test_subscribe import CHILD
from conftest import CLIENT
def test_zz(edb, tmp_path):
    edb.publish(3)
    p = subprocess.Popen([sys.executable, "-c", CHILD, CLIENT, edb.url, str(tmp_path/"s")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        subprocess.run(["py-spy", "dump", "--pid", str(p.pid)])
        p.kill(); out, err = p.communicate()
    print("OUT", out, "ERR", err, "RC", p.returncode)
    assert p.returncode == 0
